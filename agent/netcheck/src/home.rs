//! The home ("preferred") DERP region: best recent latency, scaled by the map's region scores,
//! with stickiness (reference §2.7).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use meshgate_tailcfg::{DerpMap, RegionId};

use crate::Report;

/// Reports older than this no longer count toward a region's best latency.
pub const HISTORY_WINDOW: Duration = Duration::from_secs(5 * 60 + 5);
/// Hard bound on kept reports, whatever the call rate.
pub const HISTORY_MAX_ENTRIES: usize = 64;
/// Switching home needs at least this much improvement (and a third, see `add_report`).
pub const STICKY_MIN_GAIN: Duration = Duration::from_millis(10);
/// The old home also counts as reachable if a DERP frame came from it within this long; the
/// caller keeps that clock and answers `derp_heard`.
pub const DERP_HEARD_WINDOW: Duration = Duration::from_secs(8);

/// Recent reports and the current home. One per agent; survives across netcheck runs.
#[derive(Debug, Default)]
pub struct History {
    entries: VecDeque<(Instant, BTreeMap<RegionId, Duration>)>,
    last: Option<Report>,
    home: RegionId,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// Current home region (0 = none).
    pub fn home(&self) -> RegionId {
        self.home
    }

    /// Sets the home from outside (e.g. the agent's random fallback when UDP never worked).
    pub fn set_home(&mut self, region: RegionId) {
        self.home = region;
    }

    /// The last report added (used to space retransmits of the next plan).
    pub fn last_report(&self) -> Option<&Report> {
        self.last.as_ref()
    }

    /// Records `report` taken at `now` and sets its `preferred_derp`, which becomes the home:
    /// - no latency at all in `report`: keep the current home;
    /// - candidates are the regions in `report` that are in `map` and not `NoMeasureNoHome`;
    ///   each scores its best latency over the reports of the last [`HISTORY_WINDOW`], times
    ///   `HomeParams.RegionScore[region]` when that is finite and > 0; lowest wins (ties: lower ID);
    /// - stickiness: if the old home differs, is still in `map`, and is reachable (it has a
    ///   latency in `report`, or `derp_heard(old)` says a DERP frame came from it recently), keep
    ///   it when `old − best < 10 ms` or `best > ⅔ · old`, where `old` is the old home's scaled
    ///   latency in *this* report. Reachable only through DERP (no latency to compare): keep it.
    pub fn add_report(
        &mut self,
        report: &mut Report,
        now: Instant,
        map: &DerpMap,
        derp_heard: impl Fn(RegionId) -> bool,
    ) -> RegionId {
        self.entries
            .retain(|(at, _)| now.saturating_duration_since(*at) <= HISTORY_WINDOW);
        while self.entries.len() >= HISTORY_MAX_ENTRIES {
            self.entries.pop_front();
        }
        self.entries.push_back((now, report.region_latency.clone()));

        let eligible = |r: RegionId| {
            map.regions
                .get(&r)
                .is_some_and(|reg| !reg.no_measure_no_home)
        };
        let scale = |r: RegionId, d: Duration| -> Duration {
            let score = map
                .home_params
                .as_ref()
                .and_then(|h| h.region_score.get(&r).copied())
                .filter(|s| s.is_finite() && *s > 0.0);
            match score {
                // Scores come from control: never let a huge one overflow a Duration.
                Some(s) => {
                    Duration::try_from_secs_f64(d.as_secs_f64() * s).unwrap_or(Duration::MAX)
                }
                None => d,
            }
        };

        let mut best: Option<(RegionId, Duration)> = None;
        for &region in report.region_latency.keys() {
            if !eligible(region) {
                continue;
            }
            let Some(recent) = self
                .entries
                .iter()
                .filter_map(|(_, lat)| lat.get(&region).copied())
                .min()
            else {
                continue;
            };
            let scored = scale(region, recent);
            if best.is_none_or(|(_, b)| scored < b) {
                best = Some((region, scored));
            }
        }

        let old = self.home;
        let chosen = match best {
            None => old,
            Some((new, _)) if old == 0 || new == old || !eligible(old) => new,
            Some((new, best_lat)) => {
                match report.region_latency.get(&old).map(|&d| scale(old, d)) {
                    Some(old_lat) => {
                        let small_gain = old_lat.saturating_sub(best_lat) < STICKY_MIN_GAIN;
                        // Integer nanoseconds: exact at the ⅔ boundary, and u128 cannot overflow.
                        let under_a_third = best_lat.as_nanos() * 3 > old_lat.as_nanos() * 2;
                        if small_gain || under_a_third {
                            old
                        } else {
                            new
                        }
                    }
                    None if derp_heard(old) => old,
                    None => new,
                }
            }
        };
        report.preferred_derp = chosen;
        self.home = chosen;
        self.last = Some(report.clone());
        chosen
    }
}

//! The compiled object: loading it with its maps pinned (or reused) in one directory.

use std::path::Path;

use aya::maps::MapInfo;
use aya::programs::SchedClassifier;
use aya::{Ebpf, EbpfLoader};

use crate::error::Error;
use crate::maps::{Addr4, Addr6, Config, FlowKey, FlowValue, RULE_HITS_LEN, RuleData, names};
use crate::writer::Maps;

/// Ingress program for L3 devices (WireGuard, TUN): IP header at offset 0.
pub const PROG_INGRESS_L3: &str = "acl_ingress_l3";
/// Egress program for L3 devices.
pub const PROG_EGRESS_L3: &str = "acl_egress_l3";
/// Ingress program for Ethernet devices (veth, and BPF_PROG_TEST_RUN's frames).
pub const PROG_INGRESS_ETH: &str = "acl_ingress_eth";
/// Egress program for Ethernet devices.
pub const PROG_EGRESS_ETH: &str = "acl_egress_eth";

const PROGRAMS: [&str; 4] = [
    PROG_INGRESS_L3,
    PROG_EGRESS_L3,
    PROG_INGRESS_ETH,
    PROG_EGRESS_ETH,
];

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/acl.bpf.o"));

/// The object loaded into the kernel: its four programs verified and loaded (not attached),
/// and its maps, pinned by name in the pin directory.
#[derive(Debug)]
pub struct Loaded {
    pub ebpf: Ebpf,
    pub maps: Maps,
}

impl Loaded {
    /// One of the `PROG_*` programs, for attaching or `TestRun`.
    pub fn program(&mut self, name: &'static str) -> Result<&mut SchedClassifier, Error> {
        program(&mut self.ebpf, name)
    }
}

pub(crate) fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, Error> {
    ebpf.program_mut(name)
        .ok_or(Error::Missing(name))?
        .try_into()
        .map_err(|e| Error::Program {
            program: name,
            source: Box::new(e),
        })
}

/// (name, key size, value size, max entries) of every map, as `bpf/acl.h` defines them.
const LAYOUT: [(&str, usize, usize, u32); 9] = [
    (names::CONFIG, 4, size_of::<Config>(), 1),
    (names::SRC4, 4 + size_of::<Addr4>(), 4, 262_144),
    (names::DST4, 4 + size_of::<Addr4>(), 4, 262_144),
    (names::SRC6, 4 + size_of::<Addr6>(), 4, 262_144),
    (names::DST6, 4 + size_of::<Addr6>(), 4, 262_144),
    (names::RULES, 4 + size_of::<RuleData>(), 4, 1_048_576),
    (
        names::FLOWS,
        size_of::<FlowKey>(),
        size_of::<FlowValue>(),
        32_768,
    ),
    (names::STATS, 4, 8, 16),
    (names::RULE_HITS, 4, 8, RULE_HITS_LEN),
];

/// aya reuses a pinned map without comparing it to the object's definition: a map pinned by
/// an older, different build would be misread. Refuse it instead.
fn check_pinned(pin_dir: &Path) -> Result<(), Error> {
    for (name, key, value, max) in LAYOUT {
        let path = pin_dir.join(name);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path).map_err(Error::map(name))?;
        let found = (
            info.key_size() as usize,
            info.value_size() as usize,
            info.max_entries(),
        );
        if found != (key, value, max) {
            return Err(Error::IncompatiblePin {
                path,
                found,
                expected: (key, value, max),
            });
        }
    }
    Ok(())
}

/// Loads the object with every map pinned in `pin_dir` (created if needed). Maps already
/// pinned there are reused, so a restarted agent sees the policy its predecessor wrote.
pub fn load(pin_dir: &Path) -> Result<Loaded, Error> {
    std::fs::create_dir_all(pin_dir).map_err(Error::io(format!(
        "creating pin directory {}",
        pin_dir.display()
    )))?;
    check_pinned(pin_dir)?;
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .load(OBJECT)
        .map_err(|e| match e {
            aya::EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. })
                if io_error.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Error::NotRoot {
                    what: "creating BPF maps".into(),
                }
            }
            e => Error::Load(Box::new(e)),
        })?;
    for name in PROGRAMS {
        program(&mut ebpf, name)?
            .load()
            .map_err(|e| Error::Program {
                program: name,
                source: Box::new(e),
            })?;
    }
    let maps = Maps::take(&mut ebpf)?;
    Ok(Loaded { ebpf, maps })
}

//! A tiny classic-BPF assembler: symbolic forward labels resolved into `jt`/`jf` offsets.
//!
//! Only the handful of instructions our filters need. Jumps in cBPF are forward-only and
//! 8-bit; `assemble` checks both, so a filter that grows too large fails loudly in tests
//! instead of being silently mis-encoded.

use socket2::SockFilter;

use crate::Error;

/// Kernel limit on classic-BPF program length (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;

/// A jump destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The next instruction (offset 0).
    Next,
    /// A label created by [`Asm::label`].
    Label(Label),
}

/// A forward jump label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// Operand size of a load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// One byte.
    B,
    /// Two bytes, network order.
    H,
    /// Four bytes, network order.
    W,
}

/// One instruction before label resolution; public so tests can interpret programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode (`BPF_*` bits).
    pub code: u16,
    /// Jump-if-true destination (jumps only).
    pub jt: Target,
    /// Jump-if-false destination (jumps only).
    pub jf: Target,
    /// Immediate operand.
    pub k: u32,
}

/// The assembler: push instructions, bind labels, then [`Asm::assemble`].
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
}

// The libc constants are u32 on Linux; every opcode fits in 16 bits.
const fn op(bits: u32) -> u16 {
    bits as u16
}

fn is_class(code: u16, class: u32) -> bool {
    u32::from(code) & 0x07 == class
}

fn size_bits(size: Size) -> u32 {
    match size {
        Size::B => libc::BPF_B,
        Size::H => libc::BPF_H,
        Size::W => libc::BPF_W,
    }
}

impl Asm {
    /// An empty program.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new, not yet bound label.
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Binds `label` to the next instruction pushed.
    pub fn bind(&mut self, label: Label) {
        if let Some(slot) = self.labels.get_mut(label.0) {
            *slot = Some(self.insns.len());
        }
    }

    fn push(&mut self, code: u16, jt: Target, jf: Target, k: u32) {
        self.insns.push(Insn { code, jt, jf, k });
    }

    /// `A = packet[off]` (absolute offset).
    pub fn ld_abs(&mut self, size: Size, off: u32) {
        self.push(
            op(libc::BPF_LD | size_bits(size) | libc::BPF_ABS),
            Target::Next,
            Target::Next,
            off,
        );
    }

    /// `A = packet[X + off]`.
    pub fn ld_ind(&mut self, size: Size, off: u32) {
        self.push(
            op(libc::BPF_LD | size_bits(size) | libc::BPF_IND),
            Target::Next,
            Target::Next,
            off,
        );
    }

    /// `X = 4 * (packet[off] & 0xf)`: the IPv4 header length.
    pub fn ldx_msh(&mut self, off: u32) {
        self.push(
            op(libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH),
            Target::Next,
            Target::Next,
            off,
        );
    }

    /// `if A == k goto jt else goto jf`.
    pub fn jeq(&mut self, k: u32, jt: Target, jf: Target) {
        self.push(op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K), jt, jf, k);
    }

    /// `if A & k != 0 goto jt else goto jf`.
    pub fn jset(&mut self, k: u32, jt: Target, jf: Target) {
        self.push(op(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K), jt, jf, k);
    }

    /// Return `k`: the number of bytes to keep (0 drops the packet).
    pub fn ret(&mut self, k: u32) {
        self.push(
            op(libc::BPF_RET | libc::BPF_K),
            Target::Next,
            Target::Next,
            k,
        );
    }

    /// The instructions as pushed, with labels unresolved.
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// Resolves each instruction's targets to absolute instruction indices.
    pub fn resolved(&self) -> Result<Vec<(Insn, usize, usize)>, Error> {
        if self.insns.is_empty() || self.insns.len() > MAX_INSNS {
            return Err(Error::Assembly("program length out of range"));
        }
        let mut out = Vec::with_capacity(self.insns.len());
        if self
            .insns
            .last()
            .is_some_and(|l| !is_class(l.code, libc::BPF_RET))
        {
            return Err(Error::Assembly("program must end with ret"));
        }
        for (i, insn) in self.insns.iter().enumerate() {
            if is_class(insn.code, libc::BPF_JMP) {
                let jt = self.resolve(i, insn.jt)?;
                let jf = self.resolve(i, insn.jf)?;
                out.push((*insn, jt, jf));
            } else {
                out.push((*insn, i + 1, i + 1));
            }
        }
        Ok(out)
    }

    fn resolve(&self, at: usize, target: Target) -> Result<usize, Error> {
        let dest = match target {
            Target::Next => at + 1,
            Target::Label(l) => self
                .labels
                .get(l.0)
                .copied()
                .flatten()
                .ok_or(Error::Assembly("unbound label"))?,
        };
        if dest <= at {
            return Err(Error::Assembly("backward jump"));
        }
        if dest - at - 1 > usize::from(u8::MAX) {
            return Err(Error::Assembly("jump too far"));
        }
        if dest >= self.insns.len() {
            return Err(Error::Assembly("jump past the end"));
        }
        Ok(dest)
    }

    /// Encodes the program for `SO_ATTACH_FILTER`.
    pub fn assemble(&self) -> Result<Vec<SockFilter>, Error> {
        let resolved = self.resolved()?;
        let mut out = Vec::with_capacity(resolved.len());
        for (i, (insn, jt, jf)) in resolved.into_iter().enumerate() {
            let (jt, jf) = if is_class(insn.code, libc::BPF_JMP) {
                // `resolve` bounded both offsets to u8.
                let rel = |d: usize| u8::try_from(d - i - 1).unwrap_or(0);
                (rel(jt), rel(jf))
            } else {
                (0, 0)
            };
            out.push(SockFilter::new(insn.code, jt, jf, insn.k));
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod interp {
    //! A userspace interpreter for exactly the instructions `Asm` emits, so the filter logic
    //! can be unit-tested without privileges. The real-socket tests check it against the kernel.

    use super::*;

    /// Runs the program on `pkt`; returns the accept length (0 = drop), as the kernel does,
    /// including "out-of-bounds load returns 0".
    pub fn run(asm: &Asm, pkt: &[u8]) -> u32 {
        let prog = asm.resolved().expect("assembles");
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        for _ in 0..=prog.len() {
            let (insn, jt, jf) = prog[pc];
            let code = u32::from(insn.code);
            let load = |off: u32, size: u32| -> Option<u32> {
                let off = usize::try_from(off).ok()?;
                let n = match size {
                    s if s == libc::BPF_B => 1,
                    s if s == libc::BPF_H => 2,
                    _ => 4,
                };
                let bytes = pkt.get(off..off.checked_add(n)?)?;
                Some(bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
            };
            match code & 0x07 {
                c if c == libc::BPF_LD => {
                    let size = code & 0x18;
                    let off = if code & 0xe0 == libc::BPF_IND {
                        x.wrapping_add(insn.k)
                    } else {
                        insn.k
                    };
                    match load(off, size) {
                        Some(v) => a = v,
                        None => return 0,
                    }
                    pc += 1;
                }
                c if c == libc::BPF_LDX => match load(insn.k, libc::BPF_B) {
                    Some(v) => {
                        x = 4 * (v & 0xf);
                        pc += 1;
                    }
                    None => return 0,
                },
                c if c == libc::BPF_JMP => {
                    let taken = if code & 0xf0 == libc::BPF_JSET {
                        a & insn.k != 0
                    } else {
                        a == insn.k
                    };
                    pc = if taken { jt } else { jf };
                }
                _ => return insn.k,
            }
        }
        panic!("program did not terminate");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_forward_labels_to_relative_offsets() {
        let mut asm = Asm::new();
        let drop = asm.label();
        asm.ld_abs(Size::B, 0);
        asm.jeq(7, Target::Next, Target::Label(drop));
        asm.ret(u32::MAX);
        asm.bind(drop);
        asm.ret(0);
        let prog = asm.resolved().unwrap();
        assert_eq!((prog[1].1, prog[1].2), (2, 3));
        assert_eq!(asm.assemble().unwrap().len(), 4);
        assert_eq!(interp::run(&asm, &[7]), u32::MAX);
        assert_eq!(interp::run(&asm, &[8]), 0);
        assert_eq!(interp::run(&asm, &[]), 0, "out-of-bounds load drops");
    }

    #[test]
    fn rejects_unbound_and_backward_labels() {
        let mut asm = Asm::new();
        let l = asm.label();
        asm.jeq(1, Target::Label(l), Target::Next);
        asm.ret(0);
        assert_eq!(
            asm.assemble().unwrap_err(),
            Error::Assembly("unbound label")
        );

        let mut asm = Asm::new();
        let l = asm.label();
        asm.bind(l);
        asm.jeq(1, Target::Label(l), Target::Next);
        asm.ret(0);
        assert_eq!(
            asm.assemble().unwrap_err(),
            Error::Assembly("backward jump")
        );
    }

    #[test]
    fn rejects_jumps_beyond_255() {
        let mut asm = Asm::new();
        let l = asm.label();
        asm.jeq(1, Target::Label(l), Target::Next);
        for _ in 0..256 {
            asm.ld_abs(Size::B, 0);
        }
        asm.bind(l);
        asm.ret(0);
        assert_eq!(asm.assemble().unwrap_err(), Error::Assembly("jump too far"));
    }
}

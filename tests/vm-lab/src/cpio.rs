//! A writer for the "newc" cpio format the kernel unpacks as an initramfs.
//!
//! Written here rather than with the `cpio` tool so that device nodes (`/dev/console`, which
//! PID 1 needs before it can mount devtmpfs) need no mknod on the host, and so that the archive
//! is byte-for-byte reproducible: every timestamp and owner is zero.

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

#[derive(Debug, Default)]
pub(crate) struct Archive {
    bytes: Vec<u8>,
    next_ino: u32,
}

impl Archive {
    pub(crate) fn dir(&mut self, path: &str) {
        self.entry(path, S_IFDIR | 0o755, 2, (0, 0), b"");
    }

    pub(crate) fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.entry(path, S_IFREG | (mode & 0o7777), 1, (0, 0), data);
    }

    pub(crate) fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    pub(crate) fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) {
        self.entry(path, S_IFCHR | (mode & 0o7777), 1, (major, minor), b"");
    }

    /// Closes the archive with the trailer entry.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), b"");
        self.bytes
    }

    fn entry(&mut self, path: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        self.next_ino += 1;
        let name_size = path.len() + 1;
        let fields = [
            self.next_ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            data.len() as u32,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name_size as u32,
            0, // check
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(path.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    /// Header plus name, and data, each end on a 4-byte boundary.
    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut a = Archive::default();
        a.file("init", 0o755, b"#!/bin/sh\n");
        let bytes = a.finish();
        assert!(bytes.starts_with(b"070701"));
        // 110-byte header + "init\0" padded to 116, then 10 data bytes padded to 12.
        assert_eq!(&bytes[110..114], b"init");
        assert_eq!(&bytes[116..126], b"#!/bin/sh\n");
        assert_eq!(&bytes[128..134], b"070701");
        assert!(bytes.len().is_multiple_of(4));
        assert!(bytes.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}

//! Hands the kernel back the code pages that only start-up needed.
//!
//! Building an ONNX Runtime session touches code all over the runtime's 22 MiB of text (every
//! kernel is registered, the graph is optimized), and config parsing, TLS set-up and the group
//! join touch more of the worker's own binary. Those pages stay mapped, and so counted in the
//! resident set, long after: about 30 MiB of a warmed-up co2-gru worker's 50 MiB, against
//! 17 MiB of anonymous memory (`bench/FINDINGS.md`, "Start-up pages").
//!
//! Once start-up is over, the worker unmaps the resident pages of those two files' read-only
//! mappings (`madvise(MADV_DONTNEED)`). They stay in the page cache, where the kernel reclaims
//! unmapped clean pages first; what the hot path runs is mapped again on its next use, from the
//! page cache at the cost of a minor fault, and start-up-only code stays out.
//!
//! Why it reads back unchanged: on a private file mapping, MADV_DONTNEED drops this process's
//! page-table entries and the next access maps the file's page again. Only mappings whose every
//! resident page is the file's own are passed: none holds a private copy (`Private_Dirty` and
//! `Anonymous` are 0; the loader's relocated data does, and is left alone). A read-only mapping
//! gains one only from a breakpoint (a debugger's or a uprobe's): a mapping holding one is left
//! alone too, and only one written in the microseconds between reading smaps and the call would
//! be lost. And only the executable and the ONNX Runtime library, which stay mapped for the life of the
//! process, so no other mapping can take their place between reading smaps and the call.
//! (`MADV_PAGEOUT` would also drop them from the page cache, but the kernel skips pages another
//! process maps and files the process may neither own nor write: a worker started beside another
//! released 0.4 MiB that way instead of about 30, and in the container image, whose files are
//! root's on a read-only file system, it would release nothing.)

use std::ops::Range;
use std::path::{Path, PathBuf};

/// What [`release`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// Mappings handed to the kernel.
    pub mappings: usize,
    /// Of those, the ones the kernel refused (a locked mapping).
    pub refused: usize,
    /// The resident set, in bytes, before and after.
    pub resident_before: u64,
    pub resident_after: u64,
}

/// Unmaps the resident, unmodified pages of `files`' read-only mappings in this process.
/// `files` must stay mapped for the life of the process (see the module's comment).
pub fn release(files: &[PathBuf]) -> std::io::Result<Released> {
    let resident_before = resident_bytes()?;
    // As smaps names them; a file replaced on disk since is named "<path> (deleted)" by both.
    let files: Vec<PathBuf> = files.iter().map(|f| std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())).collect();
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let ranges = reclaimable(&smaps, &files);
    let mut refused = 0;
    for range in &ranges {
        if !unmap_pages(range) {
            refused += 1;
        }
    }
    Ok(Released { mappings: ranges.len(), refused, resident_before, resident_after: resident_bytes()? })
}

fn unmap_pages(range: &Range<usize>) -> bool {
    // SAFETY: `range` is one whole read-only private mapping of a file that stays mapped for the
    // life of the process, holding no private copy when smaps was read (see the module's
    // comment): dropping its pages changes no byte any reference or thread can read, as the
    // next access maps the same file page again.
    unsafe { libc::madvise(range.start as *mut libc::c_void, range.end - range.start, libc::MADV_DONTNEED) == 0 }
}

/// This process's resident set in bytes (`/proc/self/statm`).
fn resident_bytes() -> std::io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf only reads a constant of the running system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages * u64::try_from(page).unwrap_or(4096))
}

/// The mappings in `smaps` (the text of `/proc/<pid>/smaps`) to unmap: read-only private
/// mappings of one of `files`, with resident pages and none of them private copies.
fn reclaimable(smaps: &str, files: &[PathBuf]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut current: Option<Candidate> = None;
    let mut finish = |c: Option<Candidate>| {
        if let Some(c) = c.filter(|c| c.eligible && c.rss_kb > 0 && c.private_kb == 0) {
            out.push(c.range);
        }
    };
    for line in smaps.lines() {
        if let Some((key, value)) = field(line) {
            if let Some(c) = current.as_mut() {
                let kb = value.trim().trim_end_matches("kB").trim().parse().unwrap_or(u64::MAX);
                match key {
                    "Rss" => c.rss_kb = kb,
                    "Private_Dirty" | "Anonymous" => c.private_kb = c.private_kb.saturating_add(kb),
                    _ => {}
                }
            }
            continue;
        }
        finish(current.take());
        current = header(line, files);
    }
    finish(current);
    out
}

/// One mapping of smaps, as its lines are read.
struct Candidate {
    range: Range<usize>,
    /// A read-only private mapping of one of the files.
    eligible: bool,
    rss_kb: u64,
    /// Private copies (`Private_Dirty`, `Anonymous`), which unmapping would lose.
    private_kb: u64,
}

/// `Key:   value` lines of smaps (a header's address range has no colon).
fn field(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once(':')?;
    (!key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')).then_some((key, value))
}

/// A mapping's header: `start-end perms offset dev inode [path]`.
fn header(line: &str, files: &[PathBuf]) -> Option<Candidate> {
    let mut parts = line.splitn(6, ' ');
    let (range, perms) = (parts.next()?, parts.next()?);
    let named = parts.nth(3).unwrap_or("").trim_start();
    let path = Path::new(named.strip_suffix(" (deleted)").unwrap_or(named));
    let (start, end) = range.split_once('-')?;
    let range = usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?;
    let read_only_private = perms.len() == 4 && perms.as_bytes()[1] == b'-' && perms.as_bytes()[3] == b'p';
    let eligible = read_only_private && files.iter().any(|f| f == path || f.as_os_str() == named);
    Some(Candidate { range, eligible, rss_kb: 0, private_kb: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0800000 r-xp 00400000 fd:00 1311 /usr/local/bin/streamcast (deleted)
Size:               8192 kB
Rss:                2048 kB
Private_Clean:      2048 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
55d0c0800000-55d0c0900000 r--p 00c00000 fd:00 1311 /usr/local/bin/streamcast
Rss:                1024 kB
Private_Dirty:      1024 kB
Anonymous:          1024 kB
55d0c0900000-55d0c0a00000 rw-p 00d00000 fd:00 1311 /usr/local/bin/streamcast
Rss:                 512 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f0000000000-7f0001000000 r-xp 00000000 fd:00 2222                       /opt/ort/libonnxruntime.so.1.31.1
Rss:               15000 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f0001000000-7f0001100000 r--p 00000000 fd:00 2222                       /opt/ort/libonnxruntime.so.1.31.1
Rss:                   0 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f0001100000-7f0001200000 r--p 00000000 fd:00 2223                       /opt/ort/model data.bin
Rss:                  80 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f0002000000-7f0002100000 r--s 00000000 00:05 77                         /dev/nvidiactl
Rss:                  64 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f0003000000-7f0003100000 rw-p 00000000 00:00 0
Rss:                 900 kB
Anonymous:           900 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
Rss:                   8 kB
Anonymous:             0 kB
";

    fn files() -> Vec<PathBuf> {
        vec![PathBuf::from("/usr/local/bin/streamcast"), PathBuf::from("/opt/ort/libonnxruntime.so.1.31.1")]
    }

    #[test]
    fn only_the_files_unmodified_read_only_pages_are_unmapped() {
        // Kept: the binary's text (its file since replaced on disk) and the library's. Left:
        // relocated data (private copies), writable data, a mapping with nothing resident, a
        // file not named, a device, anonymous memory, the vDSO.
        assert_eq!(
            reclaimable(SMAPS, &files()),
            vec![0x55d0_c000_0000..0x55d0_c080_0000, 0x7f00_0000_0000..0x7f00_0100_0000]
        );
    }

    #[test]
    fn an_unreadable_size_keeps_the_mapping() {
        let odd = "7f0000000000-7f0001000000 r-xp 00000000 fd:00 2222 /usr/local/bin/streamcast\nRss: 4 kB\nAnonymous: many kB\n";
        assert!(reclaimable(odd, &files()).is_empty());
    }

    /// The resident kB of the mapping that starts at `start`, from this process's smaps.
    fn resident_kb(start: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let head = format!("{start:x}-");
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head)).skip(1);
        let rss = lines.find(|l| l.starts_with("Rss:")).expect("the mapping is listed");
        rss.trim_start_matches("Rss:").trim().trim_end_matches("kB").trim().parse().unwrap()
    }

    #[test]
    fn a_file_mapping_is_unmapped_and_reads_back_unchanged() {
        const LEN: usize = 4 << 20;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pages.bin");
        let bytes: Vec<u8> = (0..LEN).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        // Written back: smaps counts a page still to be written as `Private_Dirty`, which the
        // release leaves alone.
        std::fs::File::open(&path).unwrap().sync_all().unwrap();
        let file = std::fs::File::open(&path).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh read-only private mapping of a file nothing else writes; unmapped below.
        let at =
            unsafe { libc::mmap(std::ptr::null_mut(), LEN, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0) };
        assert_ne!(at, libc::MAP_FAILED);
        // SAFETY: the mapping is LEN bytes long and stays mapped while the slice is used.
        let mapped = unsafe { std::slice::from_raw_parts(at as *const u8, LEN) };
        assert_eq!(mapped, &bytes[..]);
        let before = resident_kb(at as usize);
        assert!(before >= 4000, "{before} kB resident after reading it all");

        let released = release(&[path.clone()]).unwrap();

        let after = resident_kb(at as usize);
        assert!(after < 512, "{after} kB of the mapping still resident (was {before})");
        assert_eq!((released.mappings, released.refused), (1, 0), "{released:?}");
        assert!(released.resident_after < released.resident_before, "{released:?}");
        assert_eq!(mapped, &bytes[..], "unmapped pages read back unchanged");
        // SAFETY: `at` is the mapping made above; `mapped` is not used after this.
        assert_eq!(unsafe { libc::munmap(at, LEN) }, 0);
    }
}

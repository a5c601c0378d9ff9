//! Hands the kernel back the code pages that only start-up needed.
//!
//! Building an ONNX Runtime session touches code all over the runtime's 22 MiB of text (every
//! kernel is registered, the graph is optimized), and config parsing, TLS set-up and the group
//! join touch more of the worker's own binary. Those pages stay mapped, and so counted in the
//! resident set, long after: about 30 MiB of a warmed-up co2-gru worker's 50 MiB, against
//! 17 MiB of anonymous memory (`bench/FINDINGS.md`, "Start-up pages").
//!
//! Once start-up is over, the worker unmaps the resident pages of those two files' read-only
//! segments (`madvise(MADV_DONTNEED)`). They stay in the page cache, where the kernel reclaims
//! unmapped clean pages first; what the hot path runs is mapped again on its next use, from the
//! page cache at the cost of a minor fault, and start-up-only code stays out.
//!
//! Why every byte reads back unchanged: on a private file mapping, MADV_DONTNEED drops this
//! process's page-table entries and the next access maps the file's page again, so a page the
//! process holds its own copy of would be lost. Hence:
//! - Only the segments the dynamic loader mapped without write permission (`PT_LOAD` without
//!   `PF_W`, from `dl_iterate_phdr`) of the executable and the ONNX Runtime library: both stay
//!   loaded for the life of the process, so no other mapping can take their place between reading
//!   smaps and the call. The relocated data (RELRO) lies in the writable segment and is never
//!   touched, and a mapping of the same file made for another reason (a backtrace reading the
//!   executable's symbols) lies elsewhere.
//! - Only mappings whose smaps entry shows no private copy, resident or swapped out
//!   (`Private_Dirty`, `Anonymous` and `Swap` present and 0). A read-only segment gets one from a
//!   text relocation or a breakpoint (a debugger's or a uprobe's); such a mapping is left alone,
//!   and only a breakpoint written in the microseconds between reading smaps and the call would be
//!   lost. A page of the file not yet written back also counts as `Private_Dirty`, so a freshly
//!   built binary keeps its pages until the kernel has written it.
//!
//! (`MADV_PAGEOUT` would also drop the pages from the page cache, but the kernel skips pages
//! another process maps and files the process may neither own nor write: a worker started beside
//! another released 0.4 MiB that way instead of about 30, and in the container image, whose files
//! are root's on a read-only file system, it would release nothing.)

use std::ffi::CStr;
use std::ops::Range;
use std::path::PathBuf;

/// What [`release`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// Mappings handed to the kernel.
    pub mappings: usize,
    /// Of those, the ones the kernel refused (a locked mapping, or a seccomp filter).
    pub refused: usize,
    /// The resident set, in bytes, before and after.
    pub resident_before: u64,
    pub resident_after: u64,
}

/// Unmaps the unmodified resident pages of the read-only segments of the executable and of the
/// loaded `libraries` (see the module's comment); a library not loaded is skipped.
pub fn release(libraries: &[PathBuf]) -> std::io::Result<Released> {
    let wanted: Vec<PathBuf> = libraries.iter().filter_map(|l| std::fs::canonicalize(l).ok()).collect();
    release_within(&read_only_segments(&wanted))
}

/// [`release`] for the mappings that lie inside `segments`, which must stay mapped meanwhile.
fn release_within(segments: &[Range<usize>]) -> std::io::Result<Released> {
    let resident_before = resident_bytes()?;
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let ranges = reclaimable(&smaps, segments);
    let mut refused = 0;
    for range in &ranges {
        if !unmap_pages(range) {
            refused += 1;
        }
    }
    Ok(Released { mappings: ranges.len(), refused, resident_before, resident_after: resident_bytes()? })
}

fn unmap_pages(range: &Range<usize>) -> bool {
    // SAFETY: `range` is one whole read-only private mapping inside a segment that stays mapped
    // meanwhile, with no private copy resident or in swap when smaps was read (see the module's
    // comment): every page it drops is the file's own, and the next access maps the same file
    // page again, so no byte any reference or thread reads changes.
    unsafe { libc::madvise(range.start as *mut libc::c_void, range.end - range.start, libc::MADV_DONTNEED) == 0 }
}

fn page_size() -> usize {
    // SAFETY: sysconf only reads a constant of the running system.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// This process's resident set in bytes (`/proc/self/statm`).
fn resident_bytes() -> std::io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 =
        statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("unreadable statm: {statm:?}"))
        })?;
    Ok(pages * page_size() as u64)
}

/// The read-only `PT_LOAD` segments, in whole pages, of the executable and of the loaded objects
/// whose canonical paths are in `wanted`.
fn read_only_segments(wanted: &[PathBuf]) -> Vec<Range<usize>> {
    struct Walk<'a> {
        wanted: &'a [PathBuf],
        first: bool,
        page: usize,
        segments: Vec<Range<usize>>,
    }
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `Walk` below, borrowed for the call; `info`, its name and its
        // program headers are valid while the callback runs (dl_iterate_phdr(3)).
        let (walk, info) = unsafe { (&mut *data.cast::<Walk>(), &*info) };
        // The executable comes first, under an empty name.
        let first = std::mem::replace(&mut walk.first, false);
        let name = (!info.dlpi_name.is_null()).then(|| unsafe { CStr::from_ptr(info.dlpi_name) });
        let path = name.and_then(|n| n.to_str().ok()).filter(|n| !n.is_empty());
        let wanted =
            first || path.and_then(|p| std::fs::canonicalize(p).ok()).is_some_and(|p| walk.wanted.contains(&p));
        if wanted && !info.dlpi_phdr.is_null() {
            // SAFETY: as above; `dlpi_phnum` headers start at `dlpi_phdr`.
            let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
            for h in headers.iter().filter(|h| h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_W == 0) {
                let (start, len) = ((info.dlpi_addr + h.p_vaddr) as usize, h.p_memsz as usize);
                let page = walk.page;
                walk.segments.push(start / page * page..(start + len).div_ceil(page) * page);
            }
        }
        0
    }
    let mut walk = Walk { wanted, first: true, page: page_size(), segments: Vec::new() };
    // SAFETY: `visit` only reads what the loader passes it and writes to `walk`, which outlives
    // the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut walk as *mut Walk).cast()) };
    walk.segments
}

/// The mappings in `smaps` (the text of `/proc/<pid>/smaps`) to unmap: read-only private
/// mappings inside one of `segments`, with resident pages and no private copy.
fn reclaimable(smaps: &str, segments: &[Range<usize>]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut current: Option<Candidate> = None;
    let mut finish = |c: Option<Candidate>| {
        if let Some(c) = c.filter(Candidate::reclaimable) {
            out.push(c.range);
        }
    };
    for line in smaps.lines() {
        if let Some(next) = header(line, segments) {
            finish(current.replace(next));
        } else if let (Some(c), Some((key, value))) = (current.as_mut(), line.split_once(':')) {
            let kb = value.trim().strip_suffix("kB").and_then(|v| v.trim().parse::<u64>().ok());
            match key {
                "Rss" => c.rss_kb = kb,
                "Private_Dirty" => c.private_dirty_kb = kb,
                "Anonymous" => c.anonymous_kb = kb,
                "Swap" => c.swap_kb = kb,
                _ => {}
            }
        }
    }
    finish(current);
    out
}

/// One mapping of smaps, as its lines are read; a figure missing or unreadable keeps it mapped.
struct Candidate {
    range: Range<usize>,
    /// A read-only private mapping inside one of the segments.
    eligible: bool,
    rss_kb: Option<u64>,
    /// Private copies, resident or swapped out, which unmapping would lose.
    private_dirty_kb: Option<u64>,
    anonymous_kb: Option<u64>,
    swap_kb: Option<u64>,
}

impl Candidate {
    fn reclaimable(&self) -> bool {
        let none = |kb: Option<u64>| kb == Some(0);
        self.eligible
            && self.rss_kb.is_some_and(|kb| kb > 0)
            && none(self.private_dirty_kb)
            && none(self.anonymous_kb)
            && none(self.swap_kb)
    }
}

/// A mapping's header, `start-end perms offset dev inode [path]`; `None` for any other line.
fn header(line: &str, segments: &[Range<usize>]) -> Option<Candidate> {
    let mut parts = line.split(' ');
    let (range, perms) = (parts.next()?, parts.next()?);
    let (start, end) = range.split_once('-')?;
    let range = usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?;
    let perms = perms.as_bytes();
    if perms.len() != 4 {
        return None;
    }
    let read_only_private = perms[1] == b'-' && perms[3] == b'p';
    let inside = segments.iter().any(|s| s.start <= range.start && range.end <= s.end);
    Some(Candidate {
        range,
        eligible: read_only_private && inside,
        rss_kb: None,
        private_dirty_kb: None,
        anonymous_kb: None,
        swap_kb: None,
    })
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
Swap:                  0 kB
VmFlags: rd ex mr mw me
55d0c0800000-55d0c0900000 r--p 00c00000 fd:00 1311 /usr/local/bin/streamcast
Rss:                1024 kB
Private_Dirty:      1024 kB
Anonymous:          1024 kB
Swap:                  0 kB
55d0c0900000-55d0c0a00000 rw-p 00d00000 fd:00 1311 /usr/local/bin/streamcast
Rss:                 512 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
Swap:                  0 kB
7f0000000000-7f0001000000 r-xp 00000000 fd:00 2222                       /opt/ort/libonnxruntime.so.1.31.1
Rss:               15000 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
Swap:                  0 kB
THPeligible:           0
7f0001000000-7f0001100000 r--p 00000000 fd:00 2222                       /opt/ort/libonnxruntime.so.1.31.1
Rss:                 400 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
Swap:                 12 kB
7f0001100000-7f0001200000 r--p 00000000 fd:00 2222                       /opt/ort/libonnxruntime.so.1.31.1
Rss:                   0 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
Swap:                  0 kB
7f0001200000-7f0001300000 r--p 00000000 fd:00 2222                       /opt/ort/lib onnxruntime.so
Rss:                  80 kB
Private_Dirty:         0 kB
Swap:                  0 kB
7f0002000000-7f0002100000 r--p 00000000 fd:00 1311                       /usr/local/bin/streamcast
Rss:                  64 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
Swap:                  0 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
Rss:                   8 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
Swap:                  0 kB
";

    /// The loader's read-only segments in the fixture: the binary's and the library's.
    fn segments() -> Vec<Range<usize>> {
        vec![0x55d0_c000_0000..0x55d0_c090_0000, 0x7f00_0000_0000..0x7f00_0130_0000]
    }

    #[test]
    fn only_unmodified_pages_of_the_loaders_read_only_segments_are_unmapped() {
        // Kept: the binary's text (its file since replaced on disk) and the library's. Left:
        // relocated data (private copies), writable data, a mapping with a page in swap, one with
        // nothing resident, one whose smaps entry lacks `Anonymous`, a mapping of the binary
        // outside its segments (a backtrace reading symbols), and the vDSO.
        assert_eq!(
            reclaimable(SMAPS, &segments()),
            vec![0x55d0_c000_0000..0x55d0_c080_0000, 0x7f00_0000_0000..0x7f00_0100_0000]
        );
        assert!(reclaimable(SMAPS, &[]).is_empty());
    }

    #[test]
    fn an_unreadable_figure_keeps_the_mapping() {
        let odd = "7f0000000000-7f0001000000 r-xp 00000000 fd:00 2222 /lib/x.so\nRss: 4 kB\n\
                   Private_Dirty: 0 kB\nAnonymous: many kB\nSwap: 0 kB\n";
        assert!(reclaimable(odd, &[0x7f00_0000_0000..0x7f00_0100_0000]).is_empty());
    }

    #[test]
    fn the_executables_code_is_among_its_read_only_segments() {
        let code = release as *const () as usize;
        let segments = read_only_segments(&[]);
        assert!(segments.iter().any(|s| s.contains(&code)), "{code:x} not in {segments:x?}");
    }

    /// The resident kB of the mapping that starts at `start`, from this process's smaps.
    fn resident_kb(start: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let head = format!("{start:x}-");
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head)).skip(1);
        let rss = lines.find(|l| l.starts_with("Rss:")).expect("the mapping is listed");
        rss.trim_start_matches("Rss:").trim().trim_end_matches("kB").trim().parse().unwrap()
    }

    const LEN: usize = 4 << 20;

    /// A private mapping of a fresh 4 MiB file, written back, with every page read in.
    fn mapped_file(dir: &std::path::Path, prot: libc::c_int) -> (Vec<u8>, *mut libc::c_void) {
        use std::os::fd::AsRawFd;
        let path = dir.join("pages.bin");
        let bytes: Vec<u8> = (0..LEN).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        // Written back: smaps counts a page still to be written as `Private_Dirty`.
        std::fs::File::open(&path).unwrap().sync_all().unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: a fresh private mapping of a file nothing else writes; the tests unmap it.
        let at = unsafe { libc::mmap(std::ptr::null_mut(), LEN, prot, libc::MAP_PRIVATE, file.as_raw_fd(), 0) };
        assert_ne!(at, libc::MAP_FAILED);
        // SAFETY: the mapping is LEN bytes long and stays mapped while the slice is used.
        assert_eq!(unsafe { std::slice::from_raw_parts(at as *const u8, LEN) }, &bytes[..]);
        (bytes, at)
    }

    /// On the repository's disk: a page of a tmpfs file stays dirty however it is synced.
    fn disk_dir() -> tempfile::TempDir {
        tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap()
    }

    #[test]
    fn a_file_mapping_is_unmapped_and_reads_back_unchanged() {
        let dir = disk_dir();
        let (bytes, at) = mapped_file(dir.path(), libc::PROT_READ);
        let before = resident_kb(at as usize);
        assert!(before >= 4000, "{before} kB resident after reading it all");

        let released = release_within(&[at as usize..at as usize + LEN]).unwrap();

        let after = resident_kb(at as usize);
        assert!(after < 512, "{after} kB of the mapping still resident (was {before})");
        assert_eq!((released.mappings, released.refused), (1, 0), "{released:?}");
        // SAFETY: still mapped; unmapped below.
        let mapped = unsafe { std::slice::from_raw_parts(at as *const u8, LEN) };
        assert_eq!(mapped, &bytes[..], "unmapped pages read back unchanged");
        // SAFETY: `at` is the mapping made above; `mapped` is not used after this.
        assert_eq!(unsafe { libc::munmap(at, LEN) }, 0);
    }

    #[test]
    fn a_read_only_mapping_holding_a_private_copy_is_left_alone() {
        // The shape of relocated data: written once, then made read-only.
        let dir = disk_dir();
        let (_, at) = mapped_file(dir.path(), libc::PROT_READ | libc::PROT_WRITE);
        // SAFETY: the mapping is writable and LEN bytes long.
        unsafe { *(at as *mut u8) = 0xEE };
        // SAFETY: `at` is the mapping made above.
        assert_eq!(unsafe { libc::mprotect(at, LEN, libc::PROT_READ) }, 0);
        let before = resident_kb(at as usize);

        let released = release_within(&[at as usize..at as usize + LEN]).unwrap();

        assert_eq!(released.mappings, 0, "{released:?}");
        assert_eq!(resident_kb(at as usize), before);
        // SAFETY: still mapped.
        assert_eq!(unsafe { *(at as *const u8) }, 0xEE, "the private copy survives");
        // SAFETY: `at` is the mapping made above.
        assert_eq!(unsafe { libc::munmap(at, LEN) }, 0);
    }
}

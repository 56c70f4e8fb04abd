//! The calibration run's own listing of the pages it has written, made in the run child
//! through the zygote library. A process may read its own page map; its supervisor may not
//! read another uid's without `CAP_SYS_PTRACE`, which a container's root lacks. The child
//! opens its page map before it takes its run uid ([`open_page_map`]): afterwards the file
//! (mode 0400) is root's, as the uid change makes the process undumpable, while descriptors
//! opened before stay readable. The child never becomes dumpable again.
//!
//! The listing allocates nothing on the heaps the run shares with its zygote: its buffers
//! are one fresh mapping, left out of the listing, so that the listing adds no page of its
//! own to what the run wrote.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use super::calibrate::HOT_PAGE_LIMIT;

const PAGE: u64 = 4096;
/// Page map entry bits: the page is present, and mapped by this process only.
const PRESENT: u64 = 1 << 63;
const EXCLUSIVE: u64 = 1 << 56;
/// Room for `/proc/self/maps`, for the page map entries read at once, and for the listing.
const MAPS_BYTES: usize = 1 << 20;
const ENTRIES: usize = 1 << 15;
const LISTING_BYTES: usize = 1 << 20;

/// This process's `maps` and `pagemap`, opened by [`open_page_map`].
struct PageMap {
    maps: File,
    pagemap: File,
}

static PAGE_MAP: Mutex<Option<PageMap>> = Mutex::new(None);

fn page_map() -> std::sync::MutexGuard<'static, Option<PageMap>> {
    PAGE_MAP
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Opens `<proc>/self/maps` and `<proc>/self/pagemap` for a later [`list_written_pages`].
pub(super) fn open_page_map(proc: &Path) -> io::Result<()> {
    let maps = File::open(proc.join("self/maps"))?;
    let pagemap = File::open(proc.join("self/pagemap"))?;
    *page_map() = Some(PageMap { maps, pagemap });
    Ok(())
}

/// The descriptors [`open_page_map`] holds, to keep open through the lock-down.
pub(super) fn page_map_fds() -> Vec<RawFd> {
    page_map()
        .as_ref()
        .map(|p| vec![p.maps.as_raw_fd(), p.pagemap.as_raw_fd()])
        .unwrap_or_default()
}

/// Held by the tests that use the process-wide page map, one at a time.
#[cfg(test)]
pub(super) static PAGE_MAP_TESTS: Mutex<()> = Mutex::new(());

#[cfg(test)]
pub(super) fn take_page_map() -> Option<(File, File)> {
    page_map().take().map(|p| (p.maps, p.pagemap))
}

/// Writes to `out` a line "hako hot pages" (after a newline), then one line
/// "hot <start> <length>" (hex) per range of present pages of its private writable mappings
/// that only this process maps: the pages it has written since its fork, at most
/// [`HOT_PAGE_LIMIT`]. Only once, and only in a child that opened its page map.
pub fn list_written_pages(out: BorrowedFd<'_>) -> io::Result<()> {
    let Some(PageMap { mut maps, pagemap }) = page_map().take() else {
        return Err(io::Error::other(
            "the page map was not opened before the run uid",
        ));
    };
    list(&mut maps, &pagemap, HOT_PAGE_LIMIT, out)
}

/// The listing of at most `limit` pages.
fn list(maps: &mut File, pagemap: &File, limit: u64, out: BorrowedFd<'_>) -> io::Result<()> {
    let mut scratch = Scratch::map(MAPS_BYTES + ENTRIES * 8 + LISTING_BYTES)?;
    let own = scratch.span();
    let (maps_buf, rest) = scratch.bytes().split_at_mut(MAPS_BYTES);
    let (entries, listing_buf) = rest.split_at_mut(ENTRIES * 8);
    let maps = read_whole(maps, maps_buf)?;
    let mut listing = Listing::new(listing_buf);
    listing.line(format_args!("\nhako hot pages"))?;
    for (start, end) in maps.split(|&b| b == b'\n').filter_map(private_writable) {
        let mut chunk = start;
        while chunk < end {
            let pages = ((end - chunk) / PAGE).min(ENTRIES as u64) as usize;
            let bytes = &mut entries[..pages * 8];
            pagemap.read_exact_at(bytes, chunk / PAGE * 8)?;
            for (index, entry) in bytes.chunks_exact(8).enumerate() {
                let entry = u64::from_le_bytes(entry.try_into().unwrap_or([0; 8]));
                let address = chunk + index as u64 * PAGE;
                if entry & PRESENT != 0 && entry & EXCLUSIVE != 0 && !own.contains(&address) {
                    if listing.pages == limit {
                        listing.finish()?;
                        return write_all(out, listing.written());
                    }
                    listing.page(address)?;
                }
            }
            chunk += pages as u64 * PAGE;
        }
    }
    listing.finish()?;
    write_all(out, listing.written())
}

/// The span of a line of `/proc/self/maps` whose mapping is private and writable.
fn private_writable(line: &[u8]) -> Option<(u64, u64)> {
    let line = std::str::from_utf8(line).ok()?;
    let mut fields = line.split_ascii_whitespace();
    let (span, perms) = (fields.next()?, fields.next()?);
    if !(perms.starts_with("rw") && perms.ends_with('p')) {
        return None;
    }
    let (start, end) = span.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    (start < end).then_some((start, end))
}

fn read_whole<'a>(file: &mut File, buf: &'a mut [u8]) -> io::Result<&'a [u8]> {
    let mut len = 0;
    loop {
        if len == buf.len() {
            return Err(io::Error::other("/proc/self/maps is too long"));
        }
        match file.read(&mut buf[len..])? {
            0 => return Ok(&buf[..len]),
            n => len += n,
        }
    }
}

fn write_all(out: BorrowedFd<'_>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match nix::unistd::write(out, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(())
}

/// Ranges of pages as they are found (in ascending order), written as lines into a buffer.
struct Listing<'a> {
    buf: &'a mut [u8],
    len: usize,
    current: Option<(u64, u64)>,
    pages: u64,
}

impl<'a> Listing<'a> {
    fn new(buf: &'a mut [u8]) -> Listing<'a> {
        Listing {
            buf,
            len: 0,
            current: None,
            pages: 0,
        }
    }

    fn page(&mut self, address: u64) -> io::Result<()> {
        self.pages += 1;
        match &mut self.current {
            Some((start, len)) if *start + *len == address => *len += PAGE,
            _ => {
                self.finish()?;
                self.current = Some((address, PAGE));
            }
        }
        Ok(())
    }

    /// Writes out the range in progress.
    fn finish(&mut self) -> io::Result<()> {
        match self.current.take() {
            Some((start, len)) => self.line(format_args!("hot {start:x} {len:x}")),
            None => Ok(()),
        }
    }

    fn line(&mut self, text: std::fmt::Arguments<'_>) -> io::Result<()> {
        let mut rest = &mut self.buf[self.len..];
        let before = rest.len();
        writeln!(rest, "{text}")?;
        self.len += before - rest.len();
        Ok(())
    }

    fn written(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// An anonymous private mapping of its own, unmapped on drop.
struct Scratch {
    start: *mut u8,
    len: usize,
}

impl Scratch {
    fn map(len: usize) -> io::Result<Scratch> {
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choice; it aliases
        // nothing, and only this value uses or unmaps it.
        let start = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if start == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Scratch {
            start: start.cast(),
            len,
        })
    }

    fn span(&self) -> std::ops::Range<u64> {
        self.start as u64..self.start as u64 + self.len as u64
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `start` is a live read-write mapping of `len` bytes owned by this value, and
        // the borrow of `self` keeps it from being unmapped or aliased while the slice lives.
        unsafe { std::slice::from_raw_parts_mut(self.start, self.len) }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `map` made; no slice of it outlives `self`.
        unsafe { libc::munmap(self.start.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// The ranges of a listing (all of them: the helper cuts it at its limit).
    fn listed(output: &[u8]) -> Vec<(u64, u64)> {
        let text = std::str::from_utf8(output).unwrap();
        let lines = text.strip_prefix("\nhako hot pages\n").unwrap().lines();
        lines
            .map(|line| {
                let mut fields = line.strip_prefix("hot ").unwrap().split(' ');
                let mut hex = || u64::from_str_radix(fields.next().unwrap(), 16).unwrap();
                (hex(), hex())
            })
            .collect()
    }

    /// This test process's listing of at most `limit` pages, read from a pipe as the helper
    /// reads it (the listing may be larger than the pipe holds).
    fn listing_of_this_process(limit: u64) -> Vec<u8> {
        let (reader, writer) = nix::unistd::pipe().unwrap();
        let lister = std::thread::spawn(move || {
            let mut maps = File::open("/proc/self/maps")?;
            let pagemap = File::open("/proc/self/pagemap")?;
            list(&mut maps, &pagemap, limit, writer.as_fd())
        });
        let mut output = Vec::new();
        File::from(reader).read_to_end(&mut output).unwrap();
        lister.join().unwrap().unwrap();
        output
    }

    #[test]
    fn a_page_this_process_wrote_is_listed_and_the_listing_leaves_itself_out() {
        let mut page = Scratch::map(3 * PAGE as usize).unwrap();
        let span = page.span();
        // Only the middle page is written.
        page.bytes()[PAGE as usize] = 1;
        let ranges = listed(&listing_of_this_process(u64::MAX));
        let covers = |address: u64| {
            ranges
                .iter()
                .any(|&(start, len)| (start..start + len).contains(&address))
        };
        assert!(covers(span.start + PAGE), "{ranges:x?}");
        assert!(!covers(span.start), "{ranges:x?}");
        assert!(!covers(span.start + 2 * PAGE), "{ranges:x?}");
        // Ascending and apart, as the helper requires.
        assert!(ranges.windows(2).all(|w| w[0].0 + w[0].1 < w[1].0));
    }

    #[test]
    fn the_listing_stops_at_its_page_limit() {
        let output = listing_of_this_process(3);
        let pages: u64 = listed(&output).iter().map(|(_, len)| len / PAGE).sum();
        assert_eq!(pages, 3, "{}", String::from_utf8_lossy(&output));
    }

    #[test]
    fn without_a_page_map_opened_before_there_is_no_listing() {
        let _alone = PAGE_MAP_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let (_reader, writer) = nix::unistd::pipe().unwrap();
        assert!(take_page_map().is_none());
        assert!(list_written_pages(writer.as_fd()).is_err());
    }

    #[test]
    fn only_private_writable_mappings_are_read() {
        assert_eq!(
            private_writable(b"7f00a000-7f00c000 rw-p 00000000 00:00 0"),
            Some((0x7f00_a000, 0x7f00_c000))
        );
        for line in [
            &b"7f00a000-7f00c000 r--p 00000000 00:00 0"[..],
            b"7f00a000-7f00c000 rw-s 00000000 00:05 12 /dev/zero",
            b"7f00a000-7f00a000 rw-p 00000000 00:00 0",
            b"7f00c000-7f00a000 rw-p 00000000 00:00 0",
            b"garbage",
            b"",
        ] {
            assert_eq!(private_writable(line), None, "{line:?}");
        }
    }
}

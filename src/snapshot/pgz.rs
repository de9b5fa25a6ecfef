//! Parallel gzip that still writes one ordinary gzip member.
//!
//! The input is cut into fixed blocks. Worker threads compress each block as
//! raw deflate, primed with the last 32 KiB of the block before it (so the
//! ratio matches a serial compressor), and end every block but the last with
//! a sync flush, which byte-aligns it without ending the deflate stream. The
//! writer emits one gzip header, the blocks in order, and a trailer whose
//! crc32 is combined from the per-block crcs. This is pigz's layout: one
//! member rather than concatenated members, because every gzip reader
//! handles a single member while some stop after the first. Memory is
//! bounded: at most two blocks per worker are in flight.

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, Sender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Input bytes per block handed to a worker.
pub const BLOCK_SIZE: usize = 1 << 20;
const DICT: usize = 32 * 1024;

struct Job {
    seq: u64,
    dict: Option<Arc<Vec<u8>>>,
    data: Arc<Vec<u8>>,
    last: bool,
}

struct Done {
    seq: u64,
    out: io::Result<Vec<u8>>,
    crc: Crc,
}

/// A `Write` adapter that gzips on `workers` threads.
pub struct ParGzWriter<W: Write> {
    out: Option<W>,
    level: u32,
    buf: Vec<u8>,
    prev: Option<Arc<Vec<u8>>>,
    jobs: Option<Sender<Job>>,
    results: Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
    next_seq: u64,
    next_write: u64,
    pending: BTreeMap<u64, Done>,
    crc: Crc,
    max_in_flight: u64,
    header_written: bool,
}

impl<W: Write> std::fmt::Debug for ParGzWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParGzWriter")
            .field("level", &self.level)
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

impl<W: Write> ParGzWriter<W> {
    /// Compress into `out` at `level` (1-9) with `workers` threads.
    pub fn new(out: W, level: u32, workers: usize) -> Self {
        let workers = workers.max(1);
        let (jtx, jrx) = channel::<Job>();
        let jrx = Arc::new(Mutex::new(jrx));
        let (rtx, rrx) = sync_channel::<Done>(workers * 4);
        let threads = (0..workers)
            .map(|_| {
                let jrx = Arc::clone(&jrx);
                let rtx = rtx.clone();
                std::thread::spawn(move || {
                    loop {
                        let job = match jrx.lock() {
                            Ok(rx) => match rx.recv() {
                                Ok(j) => j,
                                Err(_) => return,
                            },
                            Err(_) => return,
                        };
                        let done = compress_block(&job, level);
                        if rtx.send(done).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        Self {
            out: Some(out),
            level,
            buf: Vec::with_capacity(BLOCK_SIZE),
            prev: None,
            jobs: Some(jtx),
            results: rrx,
            threads,
            next_seq: 0,
            next_write: 0,
            pending: BTreeMap::new(),
            crc: Crc::new(),
            max_in_flight: (workers * 2) as u64,
            header_written: false,
        }
    }

    fn out(&mut self) -> &mut W {
        self.out.as_mut().expect("writer used after finish")
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.header_written {
            let xfl = match self.level {
                9 => 2,
                1 => 4,
                _ => 0,
            };
            // magic, deflate, no flags, mtime 0, xfl, OS unix
            let hdr = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3];
            self.out().write_all(&hdr)?;
            self.header_written = true;
        }
        Ok(())
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = Arc::new(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(if last { 0 } else { BLOCK_SIZE }),
        ));
        let job = Job {
            seq: self.next_seq,
            dict: self.prev.take(),
            data: Arc::clone(&data),
            last,
        };
        self.prev = Some(data);
        self.next_seq += 1;
        self.jobs
            .as_ref()
            .expect("jobs open")
            .send(job)
            .map_err(|_| io::Error::other("gzip worker died"))?;
        // Keep memory bounded: wait while too many blocks are in flight.
        while self.next_seq - self.next_write > self.max_in_flight {
            self.wait_one()?;
        }
        self.drain_ready()
    }

    fn wait_one(&mut self) -> io::Result<()> {
        let d = self
            .results
            .recv()
            .map_err(|_| io::Error::other("gzip worker died"))?;
        self.pending.insert(d.seq, d);
        self.drain_ready()
    }

    fn drain_ready(&mut self) -> io::Result<()> {
        while let Ok(d) = self.results.try_recv() {
            self.pending.insert(d.seq, d);
        }
        self.write_header()?;
        while let Some(d) = self.pending.remove(&self.next_write) {
            let bytes = d.out?;
            self.out().write_all(&bytes)?;
            self.crc.combine(&d.crc);
            self.next_write += 1;
        }
        Ok(())
    }

    /// Compress what is buffered, write the trailer, return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while self.next_write < self.next_seq {
            self.wait_one()?;
        }
        let sum = self.crc.sum();
        let amt = self.crc.amount();
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&sum.to_le_bytes());
        trailer[4..].copy_from_slice(&amt.to_le_bytes());
        self.out().write_all(&trailer)?;
        self.out().flush()?;
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        Ok(self.out.take().expect("writer present"))
    }
}

impl<W: Write> Write for ParGzWriter<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let room = BLOCK_SIZE - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == BLOCK_SIZE {
                self.submit(false)?;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ParGzWriter<W> {
    fn drop(&mut self) {
        self.jobs = None;
        // Unblock workers waiting to send, then let them exit.
        while self.results.try_recv().is_ok() {}
        for t in self.threads.drain(..) {
            while !t.is_finished() {
                while self.results.try_recv().is_ok() {}
                std::thread::yield_now();
            }
            let _ = t.join();
        }
    }
}

fn compress_block(job: &Job, level: u32) -> Done {
    let mut crc = Crc::new();
    crc.update(&job.data);
    let out = deflate_raw(job, level);
    Done {
        seq: job.seq,
        out,
        crc,
    }
}

fn deflate_raw(job: &Job, level: u32) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level), false);
    if let Some(d) = &job.dict {
        let tail = &d[d.len().saturating_sub(DICT)..];
        c.set_dictionary(tail).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(job.data.len() / 2 + 1024);
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = c.total_in() as usize;
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let st = c
            .compress_vec(&job.data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == job.data.len();
        match st {
            Status::StreamEnd => break,
            // A sync flush is complete once all input is taken and the
            // output buffer was not filled to the brim.
            Status::Ok | Status::BufError if !job.last && all_in && out.len() < out.capacity() => {
                break;
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn roundtrip(data: &[u8], workers: usize) {
        let mut w = ParGzWriter::new(Vec::new(), 6, workers);
        for chunk in data.chunks(7777) {
            w.write_all(chunk).unwrap();
        }
        let gz = w.finish().unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back.len(), data.len());
        assert!(back == data);
    }

    #[test]
    fn roundtrips_across_blocks() {
        let mut data = Vec::new();
        for i in 0..(BLOCK_SIZE * 3 + 12345) {
            data.push(((i * 7) % 251) as u8 ^ ((i / 1000) as u8));
        }
        roundtrip(&data, 3);
        roundtrip(&data[..BLOCK_SIZE], 2);
        roundtrip(b"", 2);
        roundtrip(b"hello", 1);
    }

    #[test]
    fn gzip_tool_reads_it() {
        let data: Vec<u8> = (0..BLOCK_SIZE * 2 + 5).map(|i| (i % 13) as u8).collect();
        let mut w = ParGzWriter::new(Vec::new(), 6, 2);
        w.write_all(&data).unwrap();
        let gz = w.finish().unwrap();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.gz");
        std::fs::write(&p, &gz).unwrap();
        let st = std::process::Command::new("gzip")
            .arg("-t")
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

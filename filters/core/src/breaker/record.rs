//! A breaker's record as shared data holds it: version, window shape, state,
//! counters, key, window. A record written under another window shape keeps
//! its key and state (see [`Breakers::decode`]).

use super::window::Ring;
use super::{Breakers, Record, State, VERSION};

impl Breakers {
    /// What a record states of the window's shape after its version:
    /// buckets, status intervals, latency intervals.
    fn shape_header(&self) -> [u16; 3] {
        let shape = &self.cfg.shape;
        let narrow = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
        [
            narrow(shape.buckets as usize),
            narrow(shape.status_bounds.len().saturating_sub(1)),
            narrow(shape.latency_bins()),
        ]
    }

    /// Reads a record's version and shape: `None` for another version (or
    /// garbage), else whether the window's shape is this configuration's.
    fn read_header(&self, r: &mut Reader<'_>) -> Option<bool> {
        if r.u8()? != VERSION {
            return None;
        }
        let mut same = true;
        for expected in self.shape_header() {
            same &= r.u16()? == expected;
        }
        Some(same)
    }

    /// Serialises a record.
    pub fn encode(&self, rec: &Record) -> crate::pool::Bytes {
        let mut pooled = crate::pool::Bytes::with_capacity(40 + rec.key.len() + rec.ring.as_bytes().len());
        let out = &mut *pooled;
        out.push(VERSION);
        for v in self.shape_header() {
            put_u16(out, v);
        }
        out.push(rec.state.gauge() as u8);
        put_u32(out, rec.trips);
        put_u32(out, rec.consecutive);
        out.extend_from_slice(&rec.until.to_le_bytes());
        put_u32(out, rec.probes);
        put_u32(out, rec.tally);
        out.extend_from_slice(&rec.next_check.to_le_bytes());
        let key = rec.key.as_bytes();
        let key = key.get(..key.len().min(u16::MAX as usize)).unwrap_or(key);
        put_u16(out, key.len() as u16);
        out.extend_from_slice(key);
        out.extend_from_slice(rec.ring.as_bytes());
        pooled
    }

    /// Parses a record; `None` for a free slot or garbage. A record written
    /// under a configuration whose window has another shape (a config push
    /// changed `window`, `buckets`, the statuses or latencies counted, or
    /// added an expression) keeps its key and state (an open breaker stays
    /// open until its end) with an empty window.
    pub fn decode(&self, bytes: &[u8]) -> Option<Record> {
        let shape = &self.cfg.shape;
        let mut r = Reader(bytes);
        let same_shape = self.read_header(&mut r)?;
        let state = State::from_byte(r.u8()?)?;
        let trips = r.u32()?;
        let consecutive = r.u32()?;
        let until = r.u64()?;
        let probes = r.u32()?;
        let tally = r.u32()?;
        let next_check = r.u64()?;
        let key_len = usize::from(r.u16()?);
        let key = crate::store::Key::from_parts(&[std::str::from_utf8(r.take(key_len)?).ok()?]);
        let ring = if same_shape {
            let ring = Ring::from_bytes(shape, r.take(shape.ring_len())?)?;
            if !r.0.is_empty() {
                return None;
            }
            ring
        } else {
            shape.empty()
        };
        Some(Record { key, state, trips, consecutive, until, probes, tally, next_check, ring })
    }

    /// The key and state of an encoded record, without decoding its window:
    /// what admitting a request through a closed breaker needs (the common
    /// case). `None` also for a record of another window shape (decoded
    /// whole, and rewritten in this shape, by the slow path).
    pub fn decode_head<'a>(&self, bytes: &'a [u8]) -> Option<(&'a str, State)> {
        self.decode_head_streak(bytes).map(|(key, state, _)| (key, state))
    }

    /// [`Breakers::decode_head`] and the record's failure streak (its
    /// consecutive failures).
    pub fn decode_head_streak<'a>(&self, bytes: &'a [u8]) -> Option<(&'a str, State, u32)> {
        let mut r = Reader(bytes);
        if !self.read_header(&mut r)? {
            return None;
        }
        let state = State::from_byte(r.u8()?)?;
        r.take(4)?;
        let consecutive = r.u32()?;
        r.take(8 + 4 + 4 + 8)?;
        let key_len = usize::from(r.u16()?);
        let key = std::str::from_utf8(r.take(key_len)?).ok()?;
        Some((key, state, consecutive))
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

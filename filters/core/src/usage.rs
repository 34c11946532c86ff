//! Reading a cost from a response body as it streams by: the numbers at a
//! few dotted paths (`usage.total_tokens`) of a JSON document, or of each
//! event of a server-sent-event stream (`text/event-stream`), where the last
//! event carrying a path's number wins (the usage of a streamed LLM answer
//! comes in its last event).
//!
//! The scanner reads each chunk once, byte by byte, and keeps nothing of
//! it: its whole state is a fixed-size value (a key of at most
//! [`MAX_KEY_BYTES`], one bit per open container up to [`MAX_DEPTH`], the
//! numbers found), so a body of any length costs the same memory and is
//! never buffered. What it does not read, by design:
//! - a key spelled with escapes (`"\u0075sage"`) never matches a path;
//! - a number with an exponent (`4e2`) or a negative one is not a cost; a
//!   fraction is truncated (`400.7` is 400);
//! - a document nested deeper than [`MAX_DEPTH`], or malformed, stops the
//!   scan of that document (for an event stream: of that event) and keeps
//!   what was found before;
//! - arrays are not indexed: a path names object keys only;
//! - a compressed body (`content-encoding: gzip`) is not JSON: nothing is
//!   found, and the limit charges its default.

/// Most paths one scanner looks for (one per limit that reads the body).
pub const MAX_TARGETS: usize = 8;
/// Most segments in one path.
pub const MAX_SEGMENTS: usize = 8;
/// Longest object key compared with a path's segment; a longer key matches
/// no path.
pub const MAX_KEY_BYTES: usize = 64;
/// Deepest nesting followed; deeper, the document's scan stops.
pub const MAX_DEPTH: u32 = 64;

/// The dotted paths a filter looks for, checked at configuration time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsagePaths {
    paths: Vec<Vec<String>>,
}

impl UsagePaths {
    /// The index of `dotted` (`usage.total_tokens`), added if new; `Err`
    /// says why the path cannot be read.
    pub fn add(&mut self, dotted: &str) -> Result<usize, String> {
        let segments: Vec<String> = dotted.split('.').map(str::to_string).collect();
        if segments.iter().any(String::is_empty) {
            return Err(format!("\"{dotted}\" is not a dotted path of object keys (e.g. \"usage.total_tokens\")"));
        }
        if segments.len() > MAX_SEGMENTS {
            return Err(format!("\"{dotted}\" has more than {MAX_SEGMENTS} segments"));
        }
        if let Some(s) = segments.iter().find(|s| s.len() > MAX_KEY_BYTES) {
            return Err(format!("segment \"{s}\" is longer than {MAX_KEY_BYTES} bytes"));
        }
        if let Some(at) = self.paths.iter().position(|p| *p == segments) {
            return Ok(at);
        }
        if self.paths.len() == MAX_TARGETS {
            return Err(format!("more than {MAX_TARGETS} distinct body paths in one configuration"));
        }
        self.paths.push(segments);
        Ok(self.paths.len() - 1)
    }

    /// No path at all.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    fn all(&self) -> u8 {
        ((1u16 << self.paths.len()) - 1) as u8
    }

    /// Paths of `alive` whose segment at `at` is `key`: those that end
    /// there, and those that go deeper.
    fn matching(&self, alive: u8, at: usize, key: &[u8]) -> (u8, u8) {
        let (mut ends, mut deeper) = (0u8, 0u8);
        for (t, path) in self.paths.iter().enumerate() {
            let bit = 1u8 << t;
            if alive & bit == 0 || path.get(at).map(String::as_bytes) != Some(key) {
                continue;
            }
            if path.len() == at + 1 {
                ends |= bit;
            } else {
                deeper |= bit;
            }
        }
        (ends, deeper)
    }
}

/// How the body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One JSON document.
    Json,
    /// Server-sent events: each event's `data:` lines are one JSON document.
    EventStream,
}

impl Framing {
    /// From the response's `content-type`.
    pub fn of_content_type(content_type: Option<&str>) -> Framing {
        let is_sse = content_type
            .and_then(|c| c.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"));
        if is_sse {
            Framing::EventStream
        } else {
            Framing::Json
        }
    }
}

/// Where the JSON scan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Expecting a value (or, just inside an array, its end).
    Value,
    /// Inside an object, expecting a key or its end.
    Key,
    /// After a key, expecting `:`.
    Colon,
    /// After a value, expecting `,` or a container's end.
    After,
    /// Inside a string (a key when `key`).
    Str { key: bool, escaped: bool },
    /// Inside a number.
    Number,
    /// Inside `true`, `false` or `null`.
    Literal,
    /// The document ended, or cannot be read further.
    Stopped,
}

/// The scan of one JSON document.
#[derive(Debug, Clone, Copy)]
struct Json {
    mode: Mode,
    /// Open containers; bit `d` of `objects` is set when the container at
    /// depth `d` is an object.
    depth: u32,
    objects: u64,
    /// Per depth up to [`MAX_SEGMENTS`]: the paths still matching inside.
    alive: [u8; MAX_SEGMENTS + 1],
    key: [u8; MAX_KEY_BYTES],
    key_len: usize,
    key_long: bool,
    /// The paths the next value ends (a number there is a find) or enters.
    ends: u8,
    deeper: u8,
    number: Option<u64>,
    fraction: bool,
    /// The document's outermost container was opened.
    opened: bool,
}

impl Default for Json {
    fn default() -> Self {
        Json {
            mode: Mode::Value,
            depth: 0,
            objects: 0,
            alive: [0; MAX_SEGMENTS + 1],
            key: [0; MAX_KEY_BYTES],
            key_len: 0,
            key_long: false,
            ends: 0,
            deeper: 0,
            number: None,
            fraction: false,
            opened: false,
        }
    }
}

impl Json {
    fn in_object(&self) -> bool {
        self.depth > 0 && self.objects & (1u64 << (self.depth - 1)) != 0
    }

    fn open(&mut self, object: bool, paths: &UsagePaths) {
        if self.depth >= MAX_DEPTH {
            self.mode = Mode::Stopped;
            return;
        }
        let alive = match (object, self.depth) {
            (false, _) => 0,
            (true, 0) => paths.all(),
            (true, _) => self.deeper,
        };
        if let Some(slot) = self.alive.get_mut(self.depth as usize) {
            *slot = alive;
        }
        self.opened = true;
        if object {
            self.objects |= 1u64 << self.depth;
        } else {
            self.objects &= !(1u64 << self.depth);
        }
        self.depth += 1;
        self.ends = 0;
        self.deeper = 0;
        self.mode = if object { Mode::Key } else { Mode::Value };
    }

    fn close(&mut self, object: bool) {
        if self.depth == 0 || self.in_object() != object {
            self.mode = Mode::Stopped;
            return;
        }
        self.depth -= 1;
        self.value_done();
    }

    fn value_done(&mut self) {
        self.ends = 0;
        self.deeper = 0;
        self.mode = if self.depth == 0 { Mode::Stopped } else { Mode::After };
    }

    fn key_done(&mut self, paths: &UsagePaths) {
        let at = (self.depth - 1) as usize;
        let alive = self.alive.get(at).copied().unwrap_or(0);
        (self.ends, self.deeper) = match (self.key_long, self.key.get(..self.key_len)) {
            (false, Some(key)) if alive != 0 => paths.matching(alive, at, key),
            _ => (0, 0),
        };
        self.mode = Mode::Colon;
    }

    fn number_done(&mut self, found: &mut [Option<u64>; MAX_TARGETS]) {
        if let Some(n) = self.number {
            for (t, slot) in found.iter_mut().enumerate() {
                if self.ends & (1u8 << t) != 0 {
                    *slot = Some(n);
                }
            }
        }
        self.value_done();
    }

    /// One byte of the document.
    fn feed(&mut self, b: u8, paths: &UsagePaths, found: &mut [Option<u64>; MAX_TARGETS]) {
        match self.mode {
            Mode::Stopped => {}
            Mode::Str { key, escaped: true } => self.mode = Mode::Str { key, escaped: false },
            Mode::Str { key, escaped: false } => match b {
                b'\\' => {
                    self.key_long |= key;
                    self.mode = Mode::Str { key, escaped: true };
                }
                b'"' if key => self.key_done(paths),
                b'"' => self.value_done(),
                _ if key => match self.key.get_mut(self.key_len) {
                    Some(slot) => {
                        *slot = b;
                        self.key_len += 1;
                    }
                    None => self.key_long = true,
                },
                _ => {}
            },
            Mode::Number => match b {
                b'0'..=b'9' if !self.fraction => {
                    self.number =
                        self.number.and_then(|n| n.checked_mul(10)).and_then(|n| n.checked_add(u64::from(b - b'0')))
                }
                b'0'..=b'9' => {}
                b'.' => self.fraction = true,
                b'e' | b'E' | b'+' | b'-' => self.number = None,
                _ => {
                    self.number_done(found);
                    self.feed(b, paths, found);
                }
            },
            Mode::Literal => {
                if !b.is_ascii_alphabetic() {
                    self.value_done();
                    self.feed(b, paths, found);
                }
            }
            _ if b.is_ascii_whitespace() => {}
            Mode::Value => match b {
                b'{' => self.open(true, paths),
                b'[' => self.open(false, paths),
                b']' => self.close(false),
                b'"' => self.mode = Mode::Str { key: false, escaped: false },
                b'0'..=b'9' => {
                    self.number = Some(u64::from(b - b'0'));
                    self.fraction = false;
                    self.mode = Mode::Number;
                }
                b'-' => {
                    self.number = None;
                    self.mode = Mode::Number;
                }
                b't' | b'f' | b'n' => self.mode = Mode::Literal,
                _ => self.mode = Mode::Stopped,
            },
            Mode::Key => match b {
                b'"' => {
                    self.key_len = 0;
                    self.key_long = false;
                    self.mode = Mode::Str { key: true, escaped: false };
                }
                b'}' => self.close(true),
                _ => self.mode = Mode::Stopped,
            },
            Mode::Colon => self.mode = if b == b':' { Mode::Value } else { Mode::Stopped },
            Mode::After => match b {
                b',' if self.in_object() => self.mode = Mode::Key,
                b',' => self.mode = Mode::Value,
                b'}' => self.close(true),
                b']' => self.close(false),
                _ => self.mode = Mode::Stopped,
            },
        }
    }

    /// The end of the document: a number at its very end is complete.
    fn finish(&mut self, found: &mut [Option<u64>; MAX_TARGETS]) {
        if self.mode == Mode::Number {
            self.number_done(found);
        }
    }
}

/// Where an event stream's line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At the start of a line.
    Start,
    /// Matched this many bytes of `data:`.
    Prefix(u8),
    /// In a `data:` line's value, before its first byte (a leading space
    /// is dropped).
    DataStart,
    /// In a `data:` line's value.
    Data,
    /// In another field's line, or a comment: skipped.
    Other,
}

const DATA: &[u8] = b"data:";

/// Scans one response body for the numbers at some paths.
#[derive(Debug, Clone, Copy)]
pub struct UsageScanner {
    framing: Framing,
    json: Json,
    line: Line,
    found: [Option<u64>; MAX_TARGETS],
}

impl UsageScanner {
    /// A scanner for a body framed as `framing`.
    pub fn new(framing: Framing) -> Self {
        UsageScanner { framing, json: Json::default(), line: Line::Start, found: [None; MAX_TARGETS] }
    }

    /// Reads one chunk of the body.
    pub fn feed(&mut self, chunk: &[u8], paths: &UsagePaths) {
        match self.framing {
            Framing::Json => {
                for &b in chunk {
                    self.json.feed(b, paths, &mut self.found);
                }
            }
            Framing::EventStream => {
                for &b in chunk {
                    self.feed_event_byte(b, paths);
                }
            }
        }
    }

    fn feed_event_byte(&mut self, b: u8, paths: &UsagePaths) {
        if b == b'\r' {
            return;
        }
        if b == b'\n' {
            match self.line {
                // A blank line ends the event: its document is complete.
                Line::Start => {
                    self.json.finish(&mut self.found);
                    self.json = Json::default();
                }
                // Data lines of one event are one document, joined by newlines.
                Line::Data | Line::DataStart => self.json.feed(b'\n', paths, &mut self.found),
                Line::Prefix(_) | Line::Other => {}
            }
            self.line = Line::Start;
            return;
        }
        self.line = match self.line {
            Line::Start | Line::Prefix(_) => {
                let at = match self.line {
                    Line::Prefix(n) => usize::from(n),
                    _ => 0,
                };
                match DATA.get(at) {
                    Some(&want) if want == b && at + 1 == DATA.len() => Line::DataStart,
                    Some(&want) if want == b => Line::Prefix((at + 1) as u8),
                    _ => Line::Other,
                }
            }
            Line::DataStart if b == b' ' => Line::Data,
            Line::DataStart | Line::Data => {
                self.json.feed(b, paths, &mut self.found);
                Line::Data
            }
            Line::Other => Line::Other,
        };
    }

    /// A JSON body's document has ended (its outermost value closed): no
    /// number can come after. Always `false` for an event stream, whose
    /// end only the stream's end says.
    pub fn document_complete(&self) -> bool {
        self.framing == Framing::Json && self.json.mode == Mode::Stopped && self.json.depth == 0 && self.json.opened
    }

    /// The body ended: a number at its very end is complete.
    pub fn finish(&mut self) {
        self.json.finish(&mut self.found);
    }

    /// The number found at path `target`, the last one for an event stream.
    pub fn found(&self, target: usize) -> Option<u64> {
        self.found.get(target).copied().flatten()
    }
}

#[cfg(test)]
mod tests;

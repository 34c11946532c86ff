//! Traefik's circuit-breaker expression language (the differences from
//! Traefik's own evaluation are listed in the circuit-breaker README):
//!
//! ```text
//! LatencyAtQuantileMS(50.0) > 100 || ResponseCodeRatio(500, 600, 0, 600) > 0.25 || NetworkErrorRatio() > 0.5
//! ```
//!
//! Grammar (Traefik parses the expression as a Go expression): `||` binds
//! looser than `&&`; operands are numbers or the metric functions;
//! comparisons are `> < >= <= == !=`; parentheses group sub-expressions and
//! operands alike. Numbers are Go literals as Traefik reads them: an integer
//! is decimal digits (`017` is 17; `0x10`, `0b1`, `1_000` are refused, as
//! Traefik's `strconv.Atoi` refuses them); a float is a decimal float with an
//! optional exponent and Go's underscores (`0.5`, `.5`, `1.`, `5e-1`,
//! `1_000.5`) or a hexadecimal float with its `p` exponent (`0x1p-2`).
//! Errors carry the 1-based column where parsing failed.

use std::fmt;

/// A metric or a literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A number literal.
    Num(f64),
    /// Traefik's: responses with status 502 or 504 (whoever sent them) /
    /// requests over the window.
    NetworkErrorRatio,
    /// The filter's own: requests the proxy saw fail at the network level
    /// (connect failure, reset, timeout) / requests over the window.
    NetworkFailureRatio,
    /// Requests in the window (Traefik's `RequestThreshold()`).
    RequestThreshold,
    /// Responses with status in `[from, to)` / responses in `[div_from, div_to)`.
    ResponseCodeRatio {
        /// Numerator lower bound (inclusive).
        from: u16,
        /// Numerator upper bound (exclusive).
        to: u16,
        /// Denominator lower bound (inclusive).
        div_from: u16,
        /// Denominator upper bound (exclusive).
        div_to: u16,
    },
    /// The latency at quantile `q` (0 < q <= 100), in whole milliseconds
    /// (truncated, as Traefik's).
    LatencyAtQuantileMs(f64),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `>`
    Gt,
    /// `<`
    Lt,
    /// `>=`
    Ge,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Either side.
    Or(Box<Expr>, Box<Expr>),
    /// Both sides.
    And(Box<Expr>, Box<Expr>),
    /// A comparison.
    Cmp(Operand, CmpOp, Operand),
}

/// Where and why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    /// 1-based column (character) of the problem.
    pub column: usize,
    /// What was wrong.
    pub reason: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at column {}: {}", self.column, self.reason)
    }
}

/// Values the evaluator asks for.
pub trait Metrics {
    /// The value of a metric operand (never called for `Num`, nor for
    /// `LatencyAtQuantileMs`, which is only compared with a number).
    fn value(&self, operand: &Operand) -> f64;
    /// Whether the latency at quantile `q`, in whole milliseconds, is at
    /// least `ms` (a threshold the expression names: see
    /// [`Expr::latency_thresholds`]).
    fn latency_at_least(&self, q: f64, ms: u64) -> bool;
}

/// The whole-millisecond thresholds that decide `X op t` for an integer
/// `X` (a latency in whole milliseconds): `X >= m` for each `m` returned.
fn thresholds(t: f64) -> [u64; 2] {
    let at_least = |m: f64| if m <= 0.0 { 0 } else { m.min(1e15) as u64 };
    [at_least(t.floor() + 1.0), at_least(t.ceil())]
}

/// `X op t` for the integer latency `X`, from `X >= m` answers.
fn latency_cmp(m: &dyn Metrics, q: f64, op: CmpOp, t: f64) -> bool {
    let [above, at] = thresholds(t);
    let at_least = |ms: u64| m.latency_at_least(q, ms);
    let equal = t.fract() == 0.0 && at_least(at) && !at_least(above);
    match op {
        CmpOp::Gt => at_least(above),
        CmpOp::Ge => at_least(at),
        CmpOp::Lt => !at_least(at),
        CmpOp::Le => !at_least(above),
        CmpOp::Eq => equal,
        CmpOp::Ne => !equal,
    }
}

/// The same comparison seen from the other side (`t op X` is `X op' t`).
fn flipped(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Ge => CmpOp::Le,
        CmpOp::Le => CmpOp::Ge,
        other => other,
    }
}

/// Longest expression accepted, in characters.
pub const MAX_LEN: usize = 1024;
/// Deepest nesting of parentheses accepted.
pub const MAX_DEPTH: usize = 16;
/// Most comparisons in one expression.
pub const MAX_COMPARISONS: usize = 64;

impl Expr {
    /// Parses an expression. Expressions are bounded ([`MAX_LEN`],
    /// [`MAX_DEPTH`], [`MAX_COMPARISONS`]): parsing, evaluating and dropping
    /// one recurse over its tree, and a VM's stack is small, so an
    /// over-deep expression must be refused with a line, not overflow it.
    pub fn parse(text: &str) -> Result<Expr, ExprError> {
        Self::parse_noting(text).map(|(e, _)| e)
    }

    /// [`Expr::parse`], with a line for each argument read as Traefik reads
    /// it although it looks like a mistake (a quantile outside (0, 100], a
    /// `ResponseCodeRatio` range with `from >= to`): Traefik runs such
    /// expressions, so a migrated config must too, and its operator is told.
    pub fn parse_noting(text: &str) -> Result<(Expr, Vec<String>), ExprError> {
        let len = text.chars().count();
        if len > MAX_LEN {
            return Err(ExprError { column: MAX_LEN + 1, reason: format!("longer than {MAX_LEN} characters") });
        }
        let tokens = tokenize(text)?;
        let mut p = Parser { tokens, pos: 0, end_column: len + 1, depth: 0, comparisons: 0, notes: Vec::new() };
        let e = p.or()?;
        let mut misplaced = false;
        e.visit_cmps(&mut |l, _, r| {
            let latency = |o: &Operand| matches!(o, Operand::LatencyAtQuantileMs(_));
            let number = |o: &Operand| matches!(o, Operand::Num(_));
            if (latency(l) && !number(r)) || (latency(r) && !number(l)) {
                misplaced = true;
            }
        });
        if misplaced {
            return Err(ExprError {
                column: 1,
                reason: "LatencyAtQuantileMS is compared with a number, as in Traefik".into(),
            });
        }
        match p.peek() {
            None => Ok((e, p.notes)),
            Some(t) => Err(ExprError { column: t.column, reason: format!("unexpected {}", t.kind.describe()) }),
        }
    }

    /// Evaluates against window metrics.
    pub fn eval(&self, m: &dyn Metrics) -> bool {
        match self {
            Expr::Or(a, b) => a.eval(m) || b.eval(m),
            Expr::And(a, b) => a.eval(m) && b.eval(m),
            Expr::Cmp(Operand::LatencyAtQuantileMs(q), op, Operand::Num(t)) => latency_cmp(m, *q, *op, *t),
            Expr::Cmp(Operand::Num(t), op, Operand::LatencyAtQuantileMs(q)) => latency_cmp(m, *q, flipped(*op), *t),
            Expr::Cmp(l, op, r) => {
                let (l, r) = (operand_value(l, m), operand_value(r, m));
                match op {
                    CmpOp::Gt => l > r,
                    CmpOp::Lt => l < r,
                    CmpOp::Ge => l >= r,
                    CmpOp::Le => l <= r,
                    CmpOp::Eq => l == r,
                    CmpOp::Ne => l != r,
                }
            }
        }
    }

    /// The whole milliseconds each latency quantile is compared with, for
    /// the window to count samples on either side of them (sorted, unique,
    /// none below 1).
    pub fn latency_thresholds(&self) -> Vec<u64> {
        let mut out = Vec::new();
        self.visit_cmps(&mut |l, _, r| {
            if let (Operand::LatencyAtQuantileMs(_), Operand::Num(t))
            | (Operand::Num(t), Operand::LatencyAtQuantileMs(_)) = (l, r)
            {
                out.extend(thresholds(*t).into_iter().filter(|m| *m > 0));
            }
        });
        out.sort_unstable();
        out.dedup();
        out
    }

    fn visit_cmps<'a>(&'a self, f: &mut dyn FnMut(&'a Operand, CmpOp, &'a Operand)) {
        match self {
            Expr::Or(a, b) | Expr::And(a, b) => {
                a.visit_cmps(f);
                b.visit_cmps(f);
            }
            Expr::Cmp(l, op, r) => f(l, *op, r),
        }
    }

    /// Every operand, for deciding what the window must record.
    pub fn operands(&self) -> Vec<&Operand> {
        match self {
            Expr::Or(a, b) | Expr::And(a, b) => {
                let mut v = a.operands();
                v.extend(b.operands());
                v
            }
            Expr::Cmp(l, _, r) => vec![l, r],
        }
    }
}

fn operand_value(o: &Operand, m: &dyn Metrics) -> f64 {
    match o {
        Operand::Num(n) => *n,
        other => m.value(other),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Ident(String),
    Num(f64),
    LParen,
    RParen,
    Comma,
    Op(CmpOp),
    And,
    Or,
}

impl Kind {
    fn describe(&self) -> String {
        match self {
            Kind::Ident(s) => format!("name `{s}`"),
            Kind::Num(n) => format!("number {n}"),
            Kind::LParen => "`(`".into(),
            Kind::RParen => "`)`".into(),
            Kind::Comma => "`,`".into(),
            Kind::Op(_) => "comparison".into(),
            Kind::And => "`&&`".into(),
            Kind::Or => "`||`".into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    column: usize,
}

fn tokenize(text: &str) -> Result<Vec<Token>, ExprError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied();
    while let Some(c) = at(i) {
        let column = i + 1;
        let two = |n: char| at(i + 1) == Some(n);
        let (kind, len) = match c {
            ' ' | '\t' | '\n' | '\r' => {
                i += 1;
                continue;
            }
            '(' => (Kind::LParen, 1),
            ')' => (Kind::RParen, 1),
            ',' => (Kind::Comma, 1),
            '&' if two('&') => (Kind::And, 2),
            '|' if two('|') => (Kind::Or, 2),
            '>' if two('=') => (Kind::Op(CmpOp::Ge), 2),
            '<' if two('=') => (Kind::Op(CmpOp::Le), 2),
            '=' if two('=') => (Kind::Op(CmpOp::Eq), 2),
            '!' if two('=') => (Kind::Op(CmpOp::Ne), 2),
            '>' => (Kind::Op(CmpOp::Gt), 1),
            '<' => (Kind::Op(CmpOp::Lt), 1),
            c if c.is_ascii_digit() || (c == '.' && at(i + 1).is_some_and(|d| d.is_ascii_digit())) || c == '-' => {
                let start = i;
                let mut j = i + 1;
                // A sign belongs to the literal right after its exponent mark:
                // `e` in decimal, `p` in hexadecimal (where `e` is a digit).
                let hex = chars.get(start..).is_some_and(hex_prefix);
                while let Some(d) = at(j) {
                    let exponent_mark = match at(j - 1) {
                        Some('p' | 'P') => hex,
                        Some('e' | 'E') => !hex,
                        _ => false,
                    };
                    if d.is_ascii_alphanumeric() || d == '_' || d == '.' || ((d == '+' || d == '-') && exponent_mark) {
                        j += 1;
                    } else {
                        break;
                    }
                }
                let s: String = chars.get(start..j).map(|s| s.iter().collect()).unwrap_or_default();
                let n = number(&s).ok_or_else(|| ExprError { column, reason: format!("`{s}` is not a number") })?;
                (Kind::Num(n), j - start)
            }
            c if c.is_ascii_alphabetic() => {
                let start = i;
                let mut j = i + 1;
                while at(j).is_some_and(|d| d.is_ascii_alphanumeric() || d == '_') {
                    j += 1;
                }
                let s: String = chars.get(start..j).map(|s| s.iter().collect()).unwrap_or_default();
                (Kind::Ident(s), j - start)
            }
            other => return Err(ExprError { column, reason: format!("unexpected character `{other}`") }),
        };
        out.push(Token { kind, column });
        i += len;
    }
    Ok(out)
}

fn hex_prefix(s: &[char]) -> bool {
    let s = s.strip_prefix(&['-']).unwrap_or(s);
    matches!(s, ['0', 'x' | 'X', ..])
}

/// Go's rule for underscores in a literal: each between two digits (or
/// after a base prefix); then the digits without them.
fn without_underscores(s: &str, hex: bool) -> Option<String> {
    let b = s.as_bytes();
    let digit = |c: Option<&u8>| c.is_some_and(|c| if hex { c.is_ascii_hexdigit() } else { c.is_ascii_digit() });
    for (k, c) in b.iter().enumerate() {
        if *c == b'_' {
            let after_prefix = hex && k == 2;
            if !(digit(b.get(k + 1)) && (after_prefix || (k > 0 && digit(b.get(k - 1))))) {
                return None;
            }
        }
    }
    Some(s.replace('_', ""))
}

/// A number as Traefik reads it (see the module docs); `None` when it
/// refuses it.
fn number(text: &str) -> Option<f64> {
    let (negative, s) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let value = if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        // Only a hexadecimal float (with its p exponent) is a float in Go;
        // a hexadecimal integer is refused by Traefik's strconv.Atoi.
        let (mantissa, exponent) = hex.split_once(['p', 'P'])?;
        let mantissa = without_underscores(&format!("0x{mantissa}"), true)?;
        let mantissa = mantissa.get(2..)?;
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let mut m = 0f64;
        for c in int.chars().chain(frac.chars()) {
            m = m * 16.0 + f64::from(c.to_digit(16)?);
        }
        let exponent: i32 = without_underscores(exponent, false)?.parse().ok()?;
        m * 2f64.powi(exponent - 4 * i32::try_from(frac.len()).ok()?)
    } else if s.contains(['.', 'e', 'E']) {
        let digits = without_underscores(s, false)?;
        if !digits.bytes().all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-')) {
            return None;
        }
        digits.parse::<f64>().ok()?
    } else {
        // An integer: decimal digits only, as strconv.Atoi reads them.
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse::<f64>().ok()?
    };
    Some(if negative { -value } else { value })
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    end_column: usize,
    depth: usize,
    comparisons: usize,
    /// Arguments read as Traefik reads them (see [`Expr::parse_noting`]).
    notes: Vec<String>,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn err_here(&self, what: &str) -> ExprError {
        match self.peek() {
            Some(t) => ExprError { column: t.column, reason: format!("expected {what}, found {}", t.kind.describe()) },
            None => ExprError { column: self.end_column, reason: format!("expected {what}, found the end") },
        }
    }

    fn expect(&mut self, kind: &Kind, what: &str) -> Result<(), ExprError> {
        if self.peek().map(|t| &t.kind) == Some(kind) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err_here(what))
        }
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.and()?;
        while self.peek().map(|t| &t.kind) == Some(&Kind::Or) {
            self.pos += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.unary()?;
        while self.peek().map(|t| &t.kind) == Some(&Kind::And) {
            self.pos += 1;
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    /// After the `(` at `pos`: the token following its matching `)`.
    fn after_group(&self, pos: usize) -> Option<&Kind> {
        let mut depth = 0usize;
        for (k, t) in self.tokens.iter().enumerate().skip(pos) {
            match t.kind {
                Kind::LParen => depth += 1,
                Kind::RParen => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return self.tokens.get(k + 1).map(|t| &t.kind);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// `inner` between `(` (at the current token) and its `)`, nesting
    /// bounded by [`MAX_DEPTH`].
    fn group<T>(&mut self, inner: impl FnOnce(&mut Self) -> Result<T, ExprError>) -> Result<T, ExprError> {
        if self.depth >= MAX_DEPTH {
            let column = self.peek().map_or(self.end_column, |t| t.column);
            return Err(ExprError { column, reason: format!("parentheses nested deeper than {MAX_DEPTH}") });
        }
        self.pos += 1;
        self.depth += 1;
        let value = inner(self)?;
        self.depth -= 1;
        self.expect(&Kind::RParen, "`)`")?;
        Ok(value)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        // `(` opens a sub-expression, unless its group is an operand: one
        // followed by a comparison (`(NetworkErrorRatio()) > 0.5`).
        if self.peek().map(|t| &t.kind) == Some(&Kind::LParen)
            && !matches!(self.after_group(self.pos), Some(Kind::Op(_)))
        {
            return self.group(Self::or);
        }
        self.comparisons += 1;
        if self.comparisons > MAX_COMPARISONS {
            let column = self.peek().map_or(self.end_column, |t| t.column);
            return Err(ExprError { column, reason: format!("more than {MAX_COMPARISONS} comparisons") });
        }
        let left = self.operand()?;
        let op = match self.peek().map(|t| &t.kind) {
            Some(Kind::Op(op)) => *op,
            _ => return Err(self.err_here("a comparison (>, <, >=, <=, ==, !=)")),
        };
        self.pos += 1;
        let right = self.operand()?;
        Ok(Expr::Cmp(left, op, right))
    }

    fn operand(&mut self) -> Result<Operand, ExprError> {
        if self.peek().map(|t| &t.kind) == Some(&Kind::LParen) {
            return self.group(Self::operand);
        }
        let Some(t) = self.next() else {
            return Err(ExprError {
                column: self.end_column,
                reason: "expected a number or a function, found the end".into(),
            });
        };
        match t.kind {
            Kind::Num(n) => Ok(Operand::Num(n)),
            Kind::Ident(name) => {
                self.expect(&Kind::LParen, "`(` after the function name")?;
                let mut args = Vec::new();
                if self.peek().map(|t| &t.kind) != Some(&Kind::RParen) {
                    loop {
                        match self.next() {
                            Some(Token { kind: Kind::Num(n), .. }) => args.push(n),
                            _ => {
                                self.pos -= 1;
                                return Err(self.err_here("a number argument"));
                            }
                        }
                        if self.peek().map(|t| &t.kind) == Some(&Kind::Comma) {
                            self.pos += 1;
                        } else {
                            break;
                        }
                    }
                }
                self.expect(&Kind::RParen, "`)`")?;
                let (operand, note) =
                    function(&name, &args).map_err(|reason| ExprError { column: t.column, reason })?;
                if let Some(note) = note {
                    self.notes.push(format!("at column {}: {note}", t.column));
                }
                Ok(operand)
            }
            other => Err(ExprError {
                column: t.column,
                reason: format!("expected a number or a function, found {}", other.describe()),
            }),
        }
    }
}

/// The operand a function call names, and a note when an argument is read
/// as Traefik reads it although it looks like a mistake.
fn function(name: &str, args: &[f64]) -> Result<(Operand, Option<String>), String> {
    let status = |x: f64| -> Result<u16, String> {
        if x.fract() == 0.0 && (0.0..=1000.0).contains(&x) {
            Ok(x as u16)
        } else {
            Err(format!("{name}: status bounds must be whole numbers from 0 to 1000, got {x}"))
        }
    };
    let plain = |o: Operand| Ok((o, None));
    match (name, args) {
        ("NetworkErrorRatio", []) => plain(Operand::NetworkErrorRatio),
        ("NetworkFailureRatio", []) => plain(Operand::NetworkFailureRatio),
        ("RequestThreshold", []) => plain(Operand::RequestThreshold),
        ("LatencyAtQuantileMS", [q]) if *q > 0.0 && *q <= 100.0 => plain(Operand::LatencyAtQuantileMs(*q)),
        // hdrhistogram, under Traefik, clamps a quantile above 100 to 100,
        // and answers the lowest latency (0 ms) for one at or below 0.
        ("LatencyAtQuantileMS", [q]) if *q > 100.0 => Ok((
            Operand::LatencyAtQuantileMs(100.0),
            Some(format!("LatencyAtQuantileMS({q}): a quantile above 100 is read as 100, as Traefik does")),
        )),
        ("LatencyAtQuantileMS", [q]) if q.is_finite() => Ok((
            Operand::LatencyAtQuantileMs(0.0),
            Some(format!("LatencyAtQuantileMS({q}): a quantile of 0 or less is 0 ms, as in Traefik")),
        )),
        ("LatencyAtQuantileMS", [q]) => Err(format!("LatencyAtQuantileMS: quantile must be a number, got {q}")),
        ("ResponseCodeRatio", [a, b, c, d]) => {
            let (from, to, div_from, div_to) = (status(*a)?, status(*b)?, status(*c)?, status(*d)?);
            if from >= to || div_from >= div_to {
                // Traefik counts nothing in an empty range, and answers 0
                // for a ratio with nothing under it.
                let note = format!(
                    "ResponseCodeRatio({from}, {to}, {div_from}, {div_to}): a range with from >= to is empty, so the ratio is always 0, as in Traefik"
                );
                return Ok((Operand::Num(0.0), Some(note)));
            }
            plain(Operand::ResponseCodeRatio { from, to, div_from, div_to })
        }
        ("NetworkErrorRatio" | "NetworkFailureRatio" | "RequestThreshold", _) => {
            Err(format!("{name} takes no arguments"))
        }
        ("LatencyAtQuantileMS", _) => Err("LatencyAtQuantileMS takes one argument, the quantile".into()),
        ("ResponseCodeRatio", _) => Err("ResponseCodeRatio takes four arguments: from, to, divFrom, divTo".into()),
        _ => Err(format!(
            "unknown function `{name}`; use NetworkErrorRatio(), ResponseCodeRatio(from, to, divFrom, divTo), LatencyAtQuantileMS(q), RequestThreshold() or NetworkFailureRatio()"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed {
        network: f64,
        codes: f64,
        latency: f64,
    }
    impl Metrics for Fixed {
        fn value(&self, o: &Operand) -> f64 {
            match o {
                Operand::NetworkErrorRatio => self.network,
                Operand::ResponseCodeRatio { .. } => self.codes,
                Operand::LatencyAtQuantileMs(_) => self.latency,
                Operand::NetworkFailureRatio => self.network * 2.0,
                Operand::RequestThreshold => 7.0,
                Operand::Num(n) => *n,
            }
        }

        fn latency_at_least(&self, _q: f64, ms: u64) -> bool {
            self.latency.floor() >= ms as f64
        }
    }

    fn accepted(text: &str) -> Option<Expr> {
        Expr::parse(text).ok()
    }

    #[test]
    fn numbers_as_traefik_reads_them() {
        let value = |text: &str| match accepted(&format!("NetworkErrorRatio() > {text}")) {
            Some(Expr::Cmp(_, _, Operand::Num(n))) => Some(n),
            _ => None,
        };
        // Floats: Go's forms, strconv.ParseFloat's values.
        assert_eq!(value("0.5"), Some(0.5));
        assert_eq!(value(".5"), Some(0.5));
        assert_eq!(value("1."), Some(1.0));
        assert_eq!(value("5e-1"), Some(0.5));
        assert_eq!(value("5E+1"), Some(50.0));
        assert_eq!(value("1_000.5"), Some(1000.5));
        assert_eq!(value("0x1p-2"), Some(0.25));
        assert_eq!(value("0x1.8p1"), Some(3.0));
        // Integers: decimal digits, as strconv.Atoi reads them.
        assert_eq!(value("100"), Some(100.0));
        assert_eq!(value("017"), Some(17.0));
        for refused in ["0x10", "0b1", "0o7", "1_000", "1__0.5", "_1.5", "1_.5", "5e", "1.5.5", "0x1p", "0x.p1"] {
            assert_eq!(value(refused), None, "{refused}");
        }
    }

    #[test]
    fn parentheses_around_operands_and_the_new_functions() {
        let e = accepted("(NetworkErrorRatio()) > 0.5").unwrap();
        assert!(e.eval(&Fixed { network: 0.6, codes: 0.0, latency: 0.0 }));
        let e = accepted("((RequestThreshold())) >= (7) && (LatencyAtQuantileMS(50.0) > 100)").unwrap();
        assert!(!e.eval(&Fixed { network: 0.0, codes: 0.0, latency: 100.0 }));
        assert!(e.eval(&Fixed { network: 0.0, codes: 0.0, latency: 101.0 }));
        let e = accepted("NetworkFailureRatio() > 0.5 || (ResponseCodeRatio(500, 600, 0, 600) > 0.25)").unwrap();
        assert!(e.eval(&Fixed { network: 0.3, codes: 0.0, latency: 0.0 }), "our own measure, doubled by Fixed");
        assert!(accepted("(NetworkErrorRatio() > 0.5").is_none());
        assert!(accepted("(NetworkErrorRatio()) > 0.5)").is_none());
        assert!(accepted("RequestThreshold(1) > 1").is_none());
    }

    const TRAEFIK: &str =
        "LatencyAtQuantileMS(50.0) > 100 || ResponseCodeRatio(500, 600, 0, 600) > 0.25 || NetworkErrorRatio() > 0.5";

    #[test]
    fn parses_traefik_example_verbatim() {
        let e = Expr::parse(TRAEFIK).unwrap();
        let quiet = Fixed { network: 0.0, codes: 0.0, latency: 10.0 };
        assert!(!e.eval(&quiet));
        assert!(e.eval(&Fixed { latency: 101.0, ..quiet }));
        assert!(e.eval(&Fixed { codes: 0.3, network: 0.0, latency: 10.0 }));
        assert!(e.eval(&Fixed { network: 0.6, codes: 0.0, latency: 10.0 }));
        assert!(!e.eval(&Fixed { network: 0.5, codes: 0.25, latency: 100.0 }));
        assert_eq!(e.operands().len(), 6);
    }

    #[test]
    fn precedence_and_parentheses() {
        let m = Fixed { network: 1.0, codes: 0.0, latency: 0.0 };
        // && binds tighter: true || (false && false)
        assert!(Expr::parse("NetworkErrorRatio() > 0.5 || NetworkErrorRatio() < 0 && NetworkErrorRatio() < 0")
            .unwrap()
            .eval(&m));
        // (true || false) && false
        assert!(!Expr::parse("(NetworkErrorRatio() > 0.5 || NetworkErrorRatio() < 0) && NetworkErrorRatio() < 0")
            .unwrap()
            .eval(&m));
        for (op, want) in [(">=", true), ("<=", true), ("==", true), ("!=", false), ("<", false), (">", false)] {
            assert_eq!(Expr::parse(&format!("NetworkErrorRatio() {op} 1")).unwrap().eval(&m), want, "{op}");
        }
        assert!(Expr::parse("0.5 < NetworkErrorRatio()").unwrap().eval(&m));
    }

    #[test]
    fn over_deep_or_over_long_expressions_are_refused_not_overflowed() {
        let deep = format!("{}NetworkErrorRatio() > 0.5{}", "(".repeat(20_000), ")".repeat(20_000));
        assert!(Expr::parse(&deep).unwrap_err().to_string().contains("longer than 1024 characters"));
        let deep = format!("{}NetworkErrorRatio() > 0.5{}", "(".repeat(17), ")".repeat(17));
        assert_eq!(Expr::parse(&deep).unwrap_err().to_string(), "at column 17: parentheses nested deeper than 16");
        let ok = format!("{}NetworkErrorRatio() > 0.5{}", "(".repeat(16), ")".repeat(16));
        assert!(Expr::parse(&ok).is_ok());
        let wide = vec!["1 > 0"; 65].join("||");
        assert!(Expr::parse(&wide).unwrap_err().to_string().ends_with("more than 64 comparisons"));
        assert!(Expr::parse(&vec!["1 > 0"; 64].join("||")).is_ok());
    }

    #[test]
    fn malformed_expressions_report_the_column() {
        let cases = [
            ("NetworkErrorRatio() >", 22, "expected a number or a function, found the end"),
            ("NetworkErrorRatio() > 0.5 ||", 29, "found the end"),
            ("NetworkErrorRatio > 0.5", 19, "expected `(` after the function name"),
            ("NetworkErrorRate() > 0.5", 1, "unknown function `NetworkErrorRate`"),
            ("NetworkErrorRatio() 0.5", 21, "expected a comparison"),
            ("NetworkErrorRatio() > 0.5 & x", 27, "unexpected character `&`"),
            ("(NetworkErrorRatio() > 0.5", 27, "expected `)`"),
            ("ResponseCodeRatio(500, 600) > 0", 1, "ResponseCodeRatio takes four arguments"),
            ("NetworkErrorRatio() > 0.5 0.6", 27, "unexpected number"),
            ("", 1, "found the end"),
        ];
        for (text, column, reason) in cases {
            let e = Expr::parse(text).unwrap_err();
            assert_eq!(e.column, column, "{text}: {e}");
            assert!(e.reason.contains(reason), "{text}: {e}");
        }
    }

    /// Issue 30, defect 13: what Traefik runs is accepted, with its
    /// meaning and a note: quantiles clamped, empty ranges a ratio of 0.
    #[test]
    fn traefik_oddities_are_read_as_traefik_reads_them() {
        struct Latency(u64);
        impl Metrics for Latency {
            fn value(&self, _: &Operand) -> f64 {
                0.9
            }
            fn latency_at_least(&self, q: f64, ms: u64) -> bool {
                // A histogram of one latency: every quantile above 0 is it.
                q > 0.0 && ms <= self.0
            }
        }
        let slow = Latency(500);
        for (text, fires, note) in [
            ("LatencyAtQuantileMS(0.0) > 10", false, "0 or less is 0 ms"),
            ("LatencyAtQuantileMS(-5) > 10", false, "0 or less is 0 ms"),
            ("LatencyAtQuantileMS(150.0) > 10", true, "read as 100"),
            ("ResponseCodeRatio(600, 500, 0, 600) > 0.5", false, "always 0"),
            ("ResponseCodeRatio(500, 600, 600, 0) > 0.5", false, "always 0"),
        ] {
            let (e, notes) = Expr::parse_noting(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(e.eval(&slow), fires, "{text}");
            assert!(notes.len() == 1 && notes[0].contains(note), "{text}: {notes:?}");
        }
        let (_, none) = Expr::parse_noting("LatencyAtQuantileMS(50.0) > 100").unwrap();
        assert!(none.is_empty());
    }
}

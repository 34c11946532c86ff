//! Traefik's circuit-breaker expression language (the differences from
//! Traefik's own evaluation are listed in the circuit-breaker README):
//!
//! ```text
//! LatencyAtQuantileMS(50.0) > 100 || ResponseCodeRatio(500, 600, 0, 600) > 0.25 || NetworkErrorRatio() > 0.5
//! ```
//!
//! Grammar: `||` binds looser than `&&`; operands are numbers or the three
//! metric functions; comparisons are `> < >= <= == !=`; parentheses group.
//! Errors carry the 1-based column where parsing failed.

use std::fmt;

/// A metric or a literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A number literal.
    Num(f64),
    /// Network errors / requests over the window.
    NetworkErrorRatio,
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
    /// The latency at quantile `q` (0 < q <= 100), in milliseconds.
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
    /// The value of a metric operand (never called for `Num`).
    fn value(&self, operand: &Operand) -> f64;
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
        let len = text.chars().count();
        if len > MAX_LEN {
            return Err(ExprError { column: MAX_LEN + 1, reason: format!("longer than {MAX_LEN} characters") });
        }
        let tokens = tokenize(text)?;
        let mut p = Parser { tokens, pos: 0, end_column: len + 1, depth: 0, comparisons: 0 };
        let e = p.or()?;
        match p.peek() {
            None => Ok(e),
            Some(t) => Err(ExprError { column: t.column, reason: format!("unexpected {}", t.kind.describe()) }),
        }
    }

    /// Evaluates against window metrics.
    pub fn eval(&self, m: &dyn Metrics) -> bool {
        match self {
            Expr::Or(a, b) => a.eval(m) || b.eval(m),
            Expr::And(a, b) => a.eval(m) && b.eval(m),
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
            c if c.is_ascii_digit() || c == '.' || c == '-' => {
                let start = i;
                let mut j = i + 1;
                while at(j).is_some_and(|d| d.is_ascii_digit() || d == '.' || d == 'e' || d == 'E') {
                    j += 1;
                }
                let s: String = chars.get(start..j).map(|s| s.iter().collect()).unwrap_or_default();
                let n: f64 = s.parse().map_err(|_| ExprError { column, reason: format!("`{s}` is not a number") })?;
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

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    end_column: usize,
    depth: usize,
    comparisons: usize,
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

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.peek().map(|t| &t.kind) == Some(&Kind::LParen) {
            if self.depth >= MAX_DEPTH {
                let column = self.peek().map_or(self.end_column, |t| t.column);
                return Err(ExprError { column, reason: format!("parentheses nested deeper than {MAX_DEPTH}") });
            }
            self.pos += 1;
            self.depth += 1;
            let e = self.or()?;
            self.depth -= 1;
            self.expect(&Kind::RParen, "`)`")?;
            return Ok(e);
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
                function(&name, &args).map_err(|reason| ExprError { column: t.column, reason })
            }
            other => Err(ExprError {
                column: t.column,
                reason: format!("expected a number or a function, found {}", other.describe()),
            }),
        }
    }
}

fn function(name: &str, args: &[f64]) -> Result<Operand, String> {
    let status = |x: f64| -> Result<u16, String> {
        if x.fract() == 0.0 && (0.0..=1000.0).contains(&x) {
            Ok(x as u16)
        } else {
            Err(format!("{name}: status bounds must be whole numbers from 0 to 1000, got {x}"))
        }
    };
    match (name, args) {
        ("NetworkErrorRatio", []) => Ok(Operand::NetworkErrorRatio),
        ("LatencyAtQuantileMS", [q]) if *q > 0.0 && *q <= 100.0 => Ok(Operand::LatencyAtQuantileMs(*q)),
        ("LatencyAtQuantileMS", [q]) => Err(format!("LatencyAtQuantileMS: quantile must be in (0, 100], got {q}")),
        ("ResponseCodeRatio", [a, b, c, d]) => {
            let (from, to, div_from, div_to) = (status(*a)?, status(*b)?, status(*c)?, status(*d)?);
            if from >= to || div_from >= div_to {
                return Err("ResponseCodeRatio: each range needs from < to".into());
            }
            Ok(Operand::ResponseCodeRatio { from, to, div_from, div_to })
        }
        ("NetworkErrorRatio", _) => Err("NetworkErrorRatio takes no arguments".into()),
        ("LatencyAtQuantileMS", _) => Err("LatencyAtQuantileMS takes one argument, the quantile".into()),
        ("ResponseCodeRatio", _) => Err("ResponseCodeRatio takes four arguments: from, to, divFrom, divTo".into()),
        _ => Err(format!(
            "unknown function `{name}`; use NetworkErrorRatio(), ResponseCodeRatio(from, to, divFrom, divTo) or LatencyAtQuantileMS(q)"
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
                Operand::Num(n) => *n,
            }
        }
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
            ("ResponseCodeRatio(600, 500, 0, 600) > 0", 1, "from < to"),
            ("LatencyAtQuantileMS(150) > 1", 1, "quantile must be in (0, 100]"),
            ("NetworkErrorRatio() > 0.5 0.6", 27, "unexpected number"),
            ("", 1, "found the end"),
        ];
        for (text, column, reason) in cases {
            let e = Expr::parse(text).unwrap_err();
            assert_eq!(e.column, column, "{text}: {e}");
            assert!(e.reason.contains(reason), "{text}: {e}");
        }
    }
}

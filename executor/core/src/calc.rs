//! The arithmetic behind the `calculator` tool: a tokenizer and a depth-limited
//! recursive-descent parser that evaluates as it parses (no `eval`, no code execution), plus
//! the number formatting the tool and the planners share.
//!
//! Grammar (lowest to highest precedence):
//!
//! ```text
//! expr    := term (("+" | "-") term)*
//! term    := unary (("*" | "/" | "%") unary)*
//! unary   := ("+" | "-")* power
//! power   := primary (("^" | "**") unary)?      -- right-associative
//! primary := number | "(" expr ")"
//! number  := digits ["." digits*] | "." digits   -- ASCII digits only, no exponent
//! ```
//!
//! Power binds tighter than a sign on its left (`-2^2` is `-4`, as in mathematics) but its
//! exponent may carry a sign (`2^-1` is `0.5`). `%` is the truncated remainder, so its sign
//! follows the dividend (`-7 % 3` is `-1`), as in Rust, C and JavaScript.
//!
//! Positions in errors are **1-based and counted in characters** (not bytes), so they match
//! what a person sees when counting along the expression. An error at the end of the input
//! points one past the last character.
//!
//! Promises: every input (any UTF-8, any length) returns `Ok` with a finite number or a
//! `CalcError`; nothing panics, and recursion is bounded by [`MAX_DEPTH`] whatever the input
//! length. Syntax errors win over arithmetic ones: `1/0 +` reports the missing operand.

use std::fmt;
use std::ops::Range;

use serde_json::Value;

/// Longest accepted expression, in bytes.
pub const MAX_EXPRESSION_LEN: usize = 1000;

/// Deepest accepted nesting, counting each open parenthesis, each sign (`-`/`+` prefix) and
/// each exponent (`^`/`**` right operand) that encloses the current position.
pub const MAX_DEPTH: usize = 64;

/// Integers up to this magnitude are exact in f64 and in every JSON reader.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_992.0; // 2^53

/// Longest token text quoted back in an error message.
const MAX_QUOTED_CHARS: usize = 24;

/// Why an expression was rejected, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind} at position {position}")]
pub struct CalcError {
    /// 1-based character position of the offending token (one past the end for a missing
    /// token).
    pub position: usize,
    pub kind: CalcErrorKind,
}

/// What was wrong with an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalcErrorKind {
    /// Nothing but whitespace.
    Empty,
    /// Longer than [`MAX_EXPRESSION_LEN`] bytes.
    TooLong { bytes: usize },
    /// A character that is not part of the language (letters, `;`, non-ASCII digits, NUL...).
    UnexpectedChar(char),
    /// `1e3`-style exponent notation, which is deliberately not supported.
    ScientificNotation,
    /// A run of digits and dots that is not a number, e.g. `1.2.3` or `.`.
    MalformedNumber(String),
    /// A valid token in a place where it cannot stand.
    UnexpectedToken {
        found: String,
        expected: &'static str,
    },
    /// The expression stops where something else was required.
    UnexpectedEnd { expected: &'static str },
    /// A `(` that is never closed (the position is the `(`).
    UnclosedParen,
    /// A `)` with no `(` to close.
    UnmatchedParen,
    /// More than [`MAX_DEPTH`] levels of parentheses, signs or exponents.
    TooDeep,
    /// A literal too large to represent (it would be infinite).
    NumberTooLarge,
    /// `x / 0`, or zero raised to a negative power.
    DivisionByZero,
    /// `x % 0`.
    ModuloByZero,
    /// The result of an operation is too large to represent.
    Overflow,
    /// The result of an operation is not a real number, e.g. `(-8)^(1/3)`.
    NotANumber,
}

impl CalcErrorKind {
    /// True when the expression was well formed but its arithmetic has no finite answer
    /// (division by zero, overflow, NaN); false for syntax and limit errors.
    pub fn is_arithmetic(&self) -> bool {
        matches!(
            self,
            Self::DivisionByZero | Self::ModuloByZero | Self::Overflow | Self::NotANumber
        )
    }
}

impl fmt::Display for CalcErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty expression"),
            Self::TooLong { bytes } => {
                write!(
                    f,
                    "expression too long ({bytes} bytes, at most {MAX_EXPRESSION_LEN})"
                )
            }
            Self::UnexpectedChar(c) => {
                write!(f, "unexpected character `{}`", shown_char(*c))?;
                if c.is_numeric() {
                    f.write_str(" (only ASCII digits 0-9 are allowed)")
                } else if c.is_alphabetic() || *c == '_' {
                    f.write_str(" (names and functions are not supported)")
                } else {
                    Ok(())
                }
            }
            Self::ScientificNotation => f.write_str(
                "scientific notation such as `1e3` is not supported (write the number in full)",
            ),
            Self::MalformedNumber(text) => write!(f, "malformed number `{}`", quoted(text)),
            Self::UnexpectedToken { found, expected } => {
                write!(f, "unexpected `{}`, expected {expected}", quoted(found))
            }
            Self::UnexpectedEnd { expected } => {
                write!(f, "unexpected end of expression, expected {expected}")
            }
            Self::UnclosedParen => f.write_str("unclosed `(`"),
            Self::UnmatchedParen => f.write_str("unmatched `)`"),
            Self::TooDeep => write!(
                f,
                "expression nested too deeply (more than {MAX_DEPTH} levels of parentheses, \
                 signs or powers)"
            ),
            Self::NumberTooLarge => f.write_str("number too large"),
            Self::DivisionByZero => f.write_str("division by zero"),
            Self::ModuloByZero => f.write_str("modulo by zero"),
            Self::Overflow => f.write_str("result too large (overflow)"),
            Self::NotANumber => f.write_str("result is not a real number"),
        }
    }
}

/// A character as it is safe to show in a message: control and invisible characters escaped,
/// quotes and backslashes left alone so `'os'` reads as typed.
fn shown_char(c: char) -> String {
    match c {
        '\'' | '"' | '\\' => c.to_string(),
        _ => c.escape_debug().to_string(),
    }
}

/// Token text for a message, shortened so a 900-digit literal does not flood the log.
fn quoted(text: &str) -> String {
    let mut shown: String = text
        .chars()
        .take(MAX_QUOTED_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(MAX_QUOTED_CHARS).is_some() {
        shown.push('…');
    }
    shown
}

/// Evaluates an arithmetic expression. See the module documentation for the language.
pub fn evaluate(expr: &str) -> Result<f64, CalcError> {
    evaluate_limited(expr, MAX_EXPRESSION_LEN)
}

/// `evaluate` with the length limit as a parameter, so tests can prove the depth limit alone
/// keeps the stack safe on inputs far longer than `MAX_EXPRESSION_LEN`.
fn evaluate_limited(expr: &str, max_len: usize) -> Result<f64, CalcError> {
    if expr.len() > max_len {
        return Err(CalcError {
            position: first_char_past(expr, max_len),
            kind: CalcErrorKind::TooLong { bytes: expr.len() },
        });
    }
    let (tokens, end_position) = tokenize(expr)?;
    if tokens.is_empty() {
        return Err(CalcError {
            position: 1,
            kind: CalcErrorKind::Empty,
        });
    }
    let mut parser = Parser {
        expr,
        tokens,
        next: 0,
        end_position,
        depth: 0,
        arithmetic_error: None,
    };
    let value = parser.expr()?;
    if let Some(token) = parser.peek() {
        let kind = match token.kind {
            TokenKind::RParen => CalcErrorKind::UnmatchedParen,
            _ => CalcErrorKind::UnexpectedToken {
                found: parser.text(token).to_owned(),
                expected: "an operator",
            },
        };
        return Err(CalcError {
            position: token.position,
            kind,
        });
    }
    match parser.arithmetic_error {
        Some(error) => Err(error),
        None => Ok(value),
    }
}

/// 1-based character position of the first character that ends beyond `max_bytes`.
fn first_char_past(expr: &str, max_bytes: usize) -> usize {
    expr.char_indices()
        .position(|(at, c)| at + c.len_utf8() > max_bytes)
        .map_or(1, |index| index + 1)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum TokenKind {
    Number(f64),
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Power,
    LParen,
    RParen,
}

#[derive(Clone, Debug)]
struct Token {
    kind: TokenKind,
    /// 1-based character position of the first character.
    position: usize,
    /// Byte range in the expression, for quoting the token in errors.
    bytes: Range<usize>,
}

/// Splits the expression into tokens; also returns the position one past the last character.
fn tokenize(expr: &str) -> Result<(Vec<Token>, usize), CalcError> {
    let mut tokens = Vec::new();
    let mut chars = expr.char_indices().enumerate().peekable();
    while let Some((index, (start, c))) = chars.next() {
        let position = index + 1;
        let single = |kind| Token {
            kind,
            position,
            bytes: start..start + c.len_utf8(),
        };
        let token = match c {
            _ if c.is_whitespace() => continue,
            '+' => single(TokenKind::Plus),
            '-' => single(TokenKind::Minus),
            '/' => single(TokenKind::Slash),
            '%' => single(TokenKind::Percent),
            '^' => single(TokenKind::Power),
            '(' => single(TokenKind::LParen),
            ')' => single(TokenKind::RParen),
            '*' => {
                if chars.next_if(|(_, (_, next))| *next == '*').is_some() {
                    Token {
                        kind: TokenKind::Power,
                        position,
                        bytes: start..start + 2,
                    }
                } else {
                    single(TokenKind::Star)
                }
            }
            '0'..='9' | '.' => {
                let mut end = start + 1;
                while let Some((_, (at, _))) =
                    chars.next_if(|(_, (_, next))| next.is_ascii_digit() || *next == '.')
                {
                    end = at + 1;
                }
                // Digits and dots are one byte each, so these are char boundaries.
                let text = expr.get(start..end).unwrap_or_default();
                let malformed = || CalcError {
                    position,
                    kind: CalcErrorKind::MalformedNumber(text.to_owned()),
                };
                let dots = text.bytes().filter(|b| *b == b'.').count();
                if dots > 1 || dots == text.len() {
                    return Err(malformed());
                }
                if let Some(&(e_index, (_, e))) = chars.peek()
                    && (e == 'e' || e == 'E')
                    && looks_like_exponent(expr.get(end + 1..).unwrap_or_default())
                {
                    return Err(CalcError {
                        position: e_index + 1,
                        kind: CalcErrorKind::ScientificNotation,
                    });
                }
                let value: f64 = text.parse().map_err(|_| malformed())?;
                if !value.is_finite() {
                    return Err(CalcError {
                        position,
                        kind: CalcErrorKind::NumberTooLarge,
                    });
                }
                Token {
                    kind: TokenKind::Number(value),
                    position,
                    bytes: start..end,
                }
            }
            _ => {
                return Err(CalcError {
                    position,
                    kind: CalcErrorKind::UnexpectedChar(c),
                });
            }
        };
        tokens.push(token);
    }
    Ok((tokens, expr.chars().count() + 1))
}

/// Whether the text after an `e` following a number reads as an exponent (`3`, `-5`, `+2`).
fn looks_like_exponent(rest: &str) -> bool {
    let rest = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    rest.starts_with(|c: char| c.is_ascii_digit())
}

/// What a caller wants next when an operand is missing.
const OPERAND: &str = "a number or `(`";

struct Parser<'a> {
    expr: &'a str,
    tokens: Vec<Token>,
    next: usize,
    end_position: usize,
    /// Open parentheses, signs and exponents around the current token.
    depth: usize,
    /// The first arithmetic failure in evaluation order. Parsing continues past it so a
    /// syntax error later in the input is still the one reported.
    arithmetic_error: Option<CalcError>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn peek_kind(&self) -> Option<TokenKind> {
        self.peek().map(|token| token.kind)
    }

    fn text(&self, token: &Token) -> &str {
        self.expr.get(token.bytes.clone()).unwrap_or_default()
    }

    /// Goes one level deeper; every recursive path in the parser passes through here.
    fn enter(&mut self, position: usize) -> Result<(), CalcError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(CalcError {
                position,
                kind: CalcErrorKind::TooDeep,
            });
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<f64, CalcError> {
        let mut value = self.term()?;
        while let Some(token) = self.peek() {
            let (op, position) = match token.kind {
                TokenKind::Plus => (BinaryOp::Add, token.position),
                TokenKind::Minus => (BinaryOp::Sub, token.position),
                _ => break,
            };
            self.next += 1;
            let right = self.term()?;
            value = self.apply(op, value, right, position);
        }
        Ok(value)
    }

    fn term(&mut self) -> Result<f64, CalcError> {
        let mut value = self.unary()?;
        while let Some(token) = self.peek() {
            let (op, position) = match token.kind {
                TokenKind::Star => (BinaryOp::Mul, token.position),
                TokenKind::Slash => (BinaryOp::Div, token.position),
                TokenKind::Percent => (BinaryOp::Rem, token.position),
                _ => break,
            };
            self.next += 1;
            let right = self.unary()?;
            value = self.apply(op, value, right, position);
        }
        Ok(value)
    }

    fn unary(&mut self) -> Result<f64, CalcError> {
        // Signs are folded in a loop rather than by recursion; they still count towards the
        // depth so `------…1` is bounded like any other nesting.
        let mut signs = 0;
        let mut negative = false;
        while let Some(token) = self.peek() {
            let (is_minus, position) = match token.kind {
                TokenKind::Minus => (true, token.position),
                TokenKind::Plus => (false, token.position),
                _ => break,
            };
            self.enter(position)?;
            self.next += 1;
            signs += 1;
            negative ^= is_minus;
        }
        let value = self.power()?;
        self.depth -= signs;
        Ok(if negative { -value } else { value })
    }

    fn power(&mut self) -> Result<f64, CalcError> {
        let base = self.primary()?;
        let Some(token) = self.peek() else {
            return Ok(base);
        };
        if token.kind != TokenKind::Power {
            return Ok(base);
        }
        let position = token.position;
        self.next += 1;
        self.enter(position)?;
        let exponent = self.unary()?;
        self.depth -= 1;
        Ok(self.apply(BinaryOp::Pow, base, exponent, position))
    }

    fn primary(&mut self) -> Result<f64, CalcError> {
        let Some(token) = self.peek().cloned() else {
            return Err(CalcError {
                position: self.end_position,
                kind: CalcErrorKind::UnexpectedEnd { expected: OPERAND },
            });
        };
        self.next += 1;
        match token.kind {
            TokenKind::Number(value) => Ok(value),
            TokenKind::LParen => {
                self.enter(token.position)?;
                let value = self.expr()?;
                match self.peek_kind() {
                    Some(TokenKind::RParen) => {
                        self.next += 1;
                        self.depth -= 1;
                        Ok(value)
                    }
                    None => Err(CalcError {
                        position: token.position,
                        kind: CalcErrorKind::UnclosedParen,
                    }),
                    Some(_) => Err(self.unexpected("an operator or `)`")),
                }
            }
            _ => {
                self.next -= 1;
                Err(self.unexpected(OPERAND))
            }
        }
    }

    /// The error for the token at the cursor, which cannot stand where it is.
    fn unexpected(&self, expected: &'static str) -> CalcError {
        match self.peek() {
            Some(token) => CalcError {
                position: token.position,
                kind: CalcErrorKind::UnexpectedToken {
                    found: self.text(token).to_owned(),
                    expected,
                },
            },
            None => CalcError {
                position: self.end_position,
                kind: CalcErrorKind::UnexpectedEnd { expected },
            },
        }
    }

    /// Applies one operator; records the first arithmetic failure instead of returning it so
    /// the rest of the input is still checked for syntax.
    fn apply(&mut self, op: BinaryOp, left: f64, right: f64, position: usize) -> f64 {
        if self.arithmetic_error.is_some() {
            return 0.0;
        }
        match op.apply(left, right) {
            Ok(value) => value,
            Err(kind) => {
                self.arithmetic_error = Some(CalcError { position, kind });
                0.0
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
}

impl BinaryOp {
    /// One f64 operation on finite operands; a non-finite result is an error.
    fn apply(self, left: f64, right: f64) -> Result<f64, CalcErrorKind> {
        let value = match self {
            Self::Add => left + right,
            Self::Sub => left - right,
            Self::Mul => left * right,
            Self::Div if right == 0.0 => return Err(CalcErrorKind::DivisionByZero),
            Self::Div => left / right,
            Self::Rem if right == 0.0 => return Err(CalcErrorKind::ModuloByZero),
            Self::Rem => left % right,
            // 0^-n is 1/0^n: say so rather than report an overflow.
            Self::Pow if left == 0.0 && right < 0.0 => return Err(CalcErrorKind::DivisionByZero),
            Self::Pow => left.powf(right),
        };
        if value.is_nan() {
            Err(CalcErrorKind::NotANumber)
        } else if value.is_infinite() {
            Err(CalcErrorKind::Overflow)
        } else {
            Ok(value)
        }
    }
}

/// Formats a result for people: integral values without a fraction (`300`), others as the
/// shortest decimal that reads back as the same f64 (`0.30000000000000004`), never in
/// exponent notation. `-0` prints as `0`; non-finite values print as `NaN`, `inf`, `-inf`.
pub fn format_number(x: f64) -> String {
    if x == 0.0 {
        // Also catches -0.0, which would otherwise print as "-0".
        return "0".to_owned();
    }
    // Rust's Display for f64 is already shortest-round-trip and never uses an exponent, and
    // prints integral values without a trailing ".0".
    x.to_string()
}

/// Converts a result to JSON: an integral value within ±2^53 becomes a JSON integer (`300`,
/// not `300.0`); any other finite value a JSON float; a non-finite value `null` (JSON has no
/// infinity; `evaluate` never returns one).
pub fn to_json_number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() <= MAX_SAFE_INTEGER {
        // Exact: integral and within i64 range, so the cast loses nothing (and -0.0 -> 0).
        return Value::from(x as i64);
    }
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(expr: &str) -> f64 {
        match evaluate(expr) {
            Ok(value) => value,
            Err(error) => panic!("{expr:?} failed: {error}"),
        }
    }

    fn err(expr: &str) -> CalcError {
        match evaluate(expr) {
            Ok(value) => panic!("{expr:?} evaluated to {value}, expected an error"),
            Err(error) => error,
        }
    }

    fn assert_err(expr: &str, position: usize, kind: CalcErrorKind) {
        assert_eq!(err(expr), CalcError { position, kind }, "for {expr:?}");
    }

    fn unexpected(found: &str, expected: &'static str) -> CalcErrorKind {
        CalcErrorKind::UnexpectedToken {
            found: found.to_owned(),
            expected,
        }
    }

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(ok("(41*7)+13"), 300.0);
        assert_eq!(ok("41*7+13"), 300.0);
        assert_eq!(ok("13+41*7"), 300.0);
        assert_eq!(ok("2^3^2"), 512.0);
        assert_eq!(ok("2**3**2"), 512.0);
        assert_eq!(ok("2^3**2"), 512.0);
        assert_eq!(ok("(2^3)^2"), 64.0);
        assert_eq!(ok("-2^2"), -4.0);
        assert_eq!(ok("(-2)^2"), 4.0);
        assert_eq!(ok("2^-1"), 0.5);
        assert_eq!(ok("2^-1^2"), 0.5); // 2^(-(1^2))
        assert_eq!(ok("-2^-2"), -0.25);
        assert_eq!(ok("10 % 3"), 1.0);
        assert_eq!(ok("-7 % 3"), -1.0);
        assert_eq!(ok("7.5 % 2"), 1.5);
        assert_eq!(ok("10-4-3"), 3.0);
        assert_eq!(ok("100/10/5"), 2.0);
        assert_eq!(ok("2*3%4"), 2.0);
        assert_eq!(ok("1-2*3"), -5.0);
        assert_eq!(ok("2*-3"), -6.0);
        assert_eq!(ok("--3"), 3.0);
        assert_eq!(ok("-+-3"), 3.0);
        assert_eq!(ok("+3"), 3.0);
        assert_eq!(ok("3 - -3"), 6.0);
        assert_eq!(ok("0^0"), 1.0);
        assert_eq!(ok("4^0.5"), 2.0);
    }

    #[test]
    fn decimals_and_formatting() {
        assert_eq!(format_number(ok("0.1+0.2")), "0.30000000000000004");
        assert_eq!(format_number(ok("(41*7)+13")), "300");
        assert_eq!(format_number(ok("1/4")), "0.25");
        assert_eq!(format_number(ok("-0")), "0");
        assert_eq!(format_number(ok("-1.5")), "-1.5");
        assert_eq!(format_number(ok("10^20")), "100000000000000000000");
        assert_eq!(format_number(ok("1/3")), "0.3333333333333333");
        assert_eq!(ok(".5 + 5."), 5.5);
        assert_eq!(ok("007.250"), 7.25);
        assert_eq!(format_number(f64::NAN), "NaN");
        assert_eq!(format_number(f64::INFINITY), "inf");
    }

    #[test]
    fn json_numbers_are_integers_when_integral() {
        assert_eq!(to_json_number(300.0).to_string(), "300");
        assert_eq!(to_json_number(-4.0).to_string(), "-4");
        assert_eq!(to_json_number(-0.0).to_string(), "0");
        assert_eq!(to_json_number(0.5).to_string(), "0.5");
        assert_eq!(
            to_json_number(9_007_199_254_740_992.0),
            Value::from(9_007_199_254_740_992_i64)
        );
        assert!(to_json_number(-9_007_199_254_740_992.0).is_i64());
        // Beyond 2^53 an integer would claim a precision the f64 does not have.
        assert!(to_json_number(1e20).is_f64());
        assert!(to_json_number(18_014_398_509_481_984.0).is_f64());
        assert_eq!(to_json_number(f64::INFINITY), Value::Null);
        assert_eq!(to_json_number(f64::NAN), Value::Null);
    }

    #[test]
    fn whitespace_anywhere_between_tokens() {
        assert_eq!(ok(" \t( 41 *\n7 )\r+ 13 "), 300.0);
        assert_eq!(ok("2 ** 3"), 8.0);
        assert_eq!(ok("2\u{a0}+\u{2003}2"), 4.0);
        // `* *` is two multiplications, not a power.
        assert_err("2 * * 3", 5, unexpected("*", OPERAND));
        // Whitespace splits a number into two.
        assert_err("1 2", 3, unexpected("2", "an operator"));
    }

    #[test]
    fn syntax_errors_say_what_and_where() {
        assert_err("(1+2))", 6, CalcErrorKind::UnmatchedParen);
        assert_err("(41*7))+13", 7, CalcErrorKind::UnmatchedParen);
        assert_eq!(err("(41*7))+13").to_string(), "unmatched `)` at position 7");
        assert_err("()", 2, unexpected(")", OPERAND));
        assert_eq!(
            err("1+()").to_string(),
            "unexpected `)`, expected a number or `(` at position 4"
        );
        assert_err("((1+2)", 1, CalcErrorKind::UnclosedParen);
        assert_err("(1 2)", 4, unexpected("2", "an operator or `)`"));
        assert_err("1 +", 4, CalcErrorKind::UnexpectedEnd { expected: OPERAND });
        assert_err("-", 2, CalcErrorKind::UnexpectedEnd { expected: OPERAND });
        assert_err("2^", 3, CalcErrorKind::UnexpectedEnd { expected: OPERAND });
        assert_err("*2", 1, unexpected("*", OPERAND));
        assert_err("2*/3", 3, unexpected("/", OPERAND));
        assert_err("2 % % 3", 5, unexpected("%", OPERAND));
        assert_err("2 ^ ^ 3", 5, unexpected("^", OPERAND));
        assert_err("2 *** 3", 5, unexpected("*", OPERAND));
        assert_err("(1)(2)", 4, unexpected("(", "an operator"));
        assert_err("2(3)", 2, unexpected("(", "an operator"));
    }

    #[test]
    fn number_errors() {
        assert_err("1e3", 2, CalcErrorKind::ScientificNotation);
        assert_err("2.5E-7", 4, CalcErrorKind::ScientificNotation);
        assert_err("1 + 3e+2", 6, CalcErrorKind::ScientificNotation);
        // An `e` that is not an exponent is just a letter.
        assert_err("2e", 2, CalcErrorKind::UnexpectedChar('e'));
        assert_err("1.2.3", 1, CalcErrorKind::MalformedNumber("1.2.3".into()));
        assert_err("1 + .", 5, CalcErrorKind::MalformedNumber(".".into()));
        assert_err("..", 1, CalcErrorKind::MalformedNumber("..".into()));
        assert_eq!(
            err("1.2.3").to_string(),
            "malformed number `1.2.3` at position 1"
        );
        assert!(err("1e3").to_string().contains("scientific notation"));
    }

    #[test]
    fn empty_and_too_long() {
        assert_err("", 1, CalcErrorKind::Empty);
        assert_err(" \t\n ", 1, CalcErrorKind::Empty);
        assert_err("\u{2003}\u{a0}", 1, CalcErrorKind::Empty);
        assert_eq!(err("").to_string(), "empty expression at position 1");

        // 1+1+…+1 with 499 pluses: 999 bytes.
        let many = format!("1{}", "+1".repeat(499));
        assert_eq!(ok(&many), 500.0);
        let padded = format!("{}{}", " ".repeat(MAX_EXPRESSION_LEN - 1), "7");
        assert_eq!(ok(&padded), 7.0);

        let over = format!("{}{}", " ".repeat(MAX_EXPRESSION_LEN), "7");
        assert_err(
            &over,
            MAX_EXPRESSION_LEN + 1,
            CalcErrorKind::TooLong { bytes: 1001 },
        );
        // Bytes are limited, positions count characters: 500 two-byte chars fit, 501 do not.
        let wide = "٣".repeat(501);
        assert_err(&wide, 501, CalcErrorKind::TooLong { bytes: 1002 });
        assert!(err(&wide).to_string().contains("1002 bytes, at most 1000"));
    }

    #[test]
    fn nesting_limit() {
        let nested = |n: usize| format!("{}1{}", "(".repeat(n), ")".repeat(n));
        assert_eq!(ok(&nested(MAX_DEPTH)), 1.0);
        assert_err(
            &nested(MAX_DEPTH + 1),
            MAX_DEPTH + 1,
            CalcErrorKind::TooDeep,
        );
        assert_eq!(ok(&format!("{}1", "-".repeat(MAX_DEPTH))), 1.0);
        assert_err(
            &format!("{}1", "-".repeat(MAX_DEPTH + 1)),
            MAX_DEPTH + 1,
            CalcErrorKind::TooDeep,
        );
        // 64 carets: 64 exponent levels are fine, the 65th is not.
        let tower = |n: usize| format!("1{}", "^1".repeat(n));
        assert_eq!(ok(&tower(MAX_DEPTH)), 1.0);
        assert_err(
            &tower(MAX_DEPTH + 1),
            2 * MAX_DEPTH + 2,
            CalcErrorKind::TooDeep,
        );
        // Mixed: each `-(` is two levels.
        assert_err(&format!("{}1", "-(".repeat(40)), 65, CalcErrorKind::TooDeep);
        // Depth is about nesting, not length: many siblings are fine.
        assert_eq!(ok("(1)+".repeat(200).trim_end_matches('+')), 200.0);
        // Unclosed but shallow reports the paren; unclosed and deep reports depth first.
        assert_err(
            &"(".repeat(MAX_DEPTH),
            MAX_DEPTH + 1,
            CalcErrorKind::UnexpectedEnd { expected: OPERAND },
        );
        assert_err(&"(".repeat(500), MAX_DEPTH + 1, CalcErrorKind::TooDeep);
    }

    /// The length limit would stop a 100k-char input before parsing; this proves the depth
    /// check alone keeps the stack safe, on a thread with a deliberately small stack.
    #[test]
    fn huge_nesting_does_not_overflow_the_stack() {
        let handle = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let parens = "(".repeat(100_000);
                let signs = "-".repeat(100_000);
                let tower = "2^".repeat(50_000);
                [
                    evaluate_limited(&parens, usize::MAX),
                    evaluate_limited(&signs, usize::MAX),
                    evaluate_limited(&tower, usize::MAX),
                    evaluate(&parens),
                ]
            });
        let results = match handle {
            Ok(handle) => handle.join(),
            Err(error) => panic!("cannot spawn test thread: {error}"),
        };
        let Ok([parens, signs, tower, limited]) = results else {
            panic!("evaluating deep nesting crashed the thread")
        };
        assert_eq!(parens.map_err(|e| e.kind), Err(CalcErrorKind::TooDeep));
        assert_eq!(signs.map_err(|e| e.kind), Err(CalcErrorKind::TooDeep));
        assert_eq!(tower.map_err(|e| e.kind), Err(CalcErrorKind::TooDeep));
        assert_eq!(
            limited.map_err(|e| e.kind),
            Err(CalcErrorKind::TooLong { bytes: 100_000 })
        );
    }

    #[test]
    fn arithmetic_errors() {
        assert_err("1/0", 2, CalcErrorKind::DivisionByZero);
        assert_err("1 / (2 - 2)", 3, CalcErrorKind::DivisionByZero);
        assert_err("1/-0", 2, CalcErrorKind::DivisionByZero);
        assert_err("0/0", 2, CalcErrorKind::DivisionByZero);
        assert_err("5 % 0", 3, CalcErrorKind::ModuloByZero);
        assert_err("0^-1", 2, CalcErrorKind::DivisionByZero);
        assert_err("10^400", 3, CalcErrorKind::Overflow);
        assert_err("10**400", 3, CalcErrorKind::Overflow);
        assert_err("-10^309", 4, CalcErrorKind::Overflow);
        let max = format_number(f64::MAX);
        assert_err(&format!("{max}*10"), max.len() + 1, CalcErrorKind::Overflow);
        assert_err(
            &format!("{max}+{max}"),
            max.len() + 1,
            CalcErrorKind::Overflow,
        );
        assert_err(
            &format!("-{max}-{max}"),
            max.len() + 2,
            CalcErrorKind::Overflow,
        );
        let tiny = format!("0.{}1", "0".repeat(310)); // 1e-311, subnormal but not zero
        assert_err(&format!("1/{tiny}"), 2, CalcErrorKind::Overflow);
        assert_err("(-8)^(1/3)", 5, CalcErrorKind::NotANumber);
        assert_eq!(err("7 / 0").to_string(), "division by zero at position 3");
        // The first failure in evaluation order is the one reported.
        assert_err("1%0 + 1/0", 2, CalcErrorKind::ModuloByZero);
        // Syntax beats arithmetic: the whole input is checked first.
        assert_err(
            "1/0 +",
            6,
            CalcErrorKind::UnexpectedEnd { expected: OPERAND },
        );
        assert_err("1/0 )", 5, CalcErrorKind::UnmatchedParen);
        // Underflow is not an error: the true value rounds to zero.
        assert_eq!(ok("2^-2000"), 0.0);
        assert!(CalcErrorKind::Overflow.is_arithmetic());
        assert!(!CalcErrorKind::TooDeep.is_arithmetic());
    }

    #[test]
    fn huge_literals() {
        let digits = "9".repeat(400);
        assert_err(&digits, 1, CalcErrorKind::NumberTooLarge);
        assert_err(&format!("1 + {digits}"), 5, CalcErrorKind::NumberTooLarge);
        let long = "1".repeat(300);
        assert_eq!(ok(&long), long.parse::<f64>().unwrap_or_default());
        let tiny = format!("0.{}1", "0".repeat(900));
        assert_eq!(ok(&tiny), 0.0);
        // The message quotes a shortened token, not 400 digits.
        let message = err(&format!("1 {long}")).to_string();
        assert!(message.len() < 120, "{message}");
        assert!(message.contains('…'), "{message}");
    }

    #[test]
    fn hostile_inputs_are_rejected_not_run() {
        let cases: &[(&str, usize, CalcErrorKind)] = &[
            ("__import__('os')", 1, CalcErrorKind::UnexpectedChar('_')),
            (
                "__import__('os').system('rm -rf /')",
                1,
                CalcErrorKind::UnexpectedChar('_'),
            ),
            ("1; rm -rf /", 2, CalcErrorKind::UnexpectedChar(';')),
            ("$(reboot)", 1, CalcErrorKind::UnexpectedChar('$')),
            ("`reboot`", 1, CalcErrorKind::UnexpectedChar('`')),
            ("1 && true", 3, CalcErrorKind::UnexpectedChar('&')),
            ("1 | cat /etc/passwd", 3, CalcErrorKind::UnexpectedChar('|')),
            ("eval(1)", 1, CalcErrorKind::UnexpectedChar('e')),
            ("abs(-1)", 1, CalcErrorKind::UnexpectedChar('a')),
            ("x = 1", 1, CalcErrorKind::UnexpectedChar('x')),
            ("0x1F", 2, CalcErrorKind::UnexpectedChar('x')),
            ("1_000", 2, CalcErrorKind::UnexpectedChar('_')),
            ("1,5", 2, CalcErrorKind::UnexpectedChar(',')),
            ("{step_1_output}", 1, CalcErrorKind::UnexpectedChar('{')),
            ("2 > 1", 3, CalcErrorKind::UnexpectedChar('>')),
            ("NaN", 1, CalcErrorKind::UnexpectedChar('N')),
            ("inf", 1, CalcErrorKind::UnexpectedChar('i')),
            ("1\u{0}+1", 2, CalcErrorKind::UnexpectedChar('\u{0}')),
            ("\u{0}", 1, CalcErrorKind::UnexpectedChar('\u{0}')),
            ("1+\u{202e}1", 3, CalcErrorKind::UnexpectedChar('\u{202e}')),
            ("\u{feff}1", 1, CalcErrorKind::UnexpectedChar('\u{feff}')),
            ("٣", 1, CalcErrorKind::UnexpectedChar('٣')),
            ("1 + ٣", 5, CalcErrorKind::UnexpectedChar('٣')),
            ("１+1", 1, CalcErrorKind::UnexpectedChar('１')),
            ("2×3", 2, CalcErrorKind::UnexpectedChar('×')),
            ("2−3", 2, CalcErrorKind::UnexpectedChar('−')),
            // Positions count characters, not bytes.
            ("\u{a0}\u{a0}1+x", 5, CalcErrorKind::UnexpectedChar('x')),
            ("😀", 1, CalcErrorKind::UnexpectedChar('😀')),
        ];
        for (expr, position, kind) in cases {
            assert_err(expr, *position, kind.clone());
        }
        assert_eq!(
            err("1 + ٣").to_string(),
            "unexpected character `٣` (only ASCII digits 0-9 are allowed) at position 5"
        );
        assert_eq!(
            err("__import__('os')").to_string(),
            "unexpected character `_` (names and functions are not supported) at position 1"
        );
        assert_eq!(
            err("1; rm -rf /").to_string(),
            "unexpected character `;` at position 2"
        );
        // Control characters are escaped, never echoed raw into logs.
        assert_eq!(
            err("1\u{0}").to_string(),
            "unexpected character `\\0` at position 2"
        );
        assert_eq!(
            err("\u{202e}").to_string(),
            "unexpected character `\\u{202e}` at position 1"
        );
    }

    /// An expression tree, printed fully parenthesised, with its own direct f64 evaluation.
    #[derive(Clone, Debug)]
    enum Tree {
        Literal(String),
        Neg(Box<Tree>),
        Binary(BinaryOp, &'static str, Box<Tree>, Box<Tree>),
    }

    impl Tree {
        fn render(&self) -> String {
            match self {
                Self::Literal(text) => text.clone(),
                Self::Neg(inner) => format!("(-{})", inner.render()),
                Self::Binary(_, symbol, left, right) => {
                    format!("({} {symbol} {})", left.render(), right.render())
                }
            }
        }

        /// The reference: plain f64 arithmetic, with the error rules spelled out
        /// independently of the parser (left operand first, first failure wins).
        fn eval(&self) -> Result<f64, CalcErrorKind> {
            match self {
                Self::Literal(text) => text.parse::<f64>().map_err(|_| CalcErrorKind::Empty),
                Self::Neg(inner) => Ok(-inner.eval()?),
                Self::Binary(op, _, left, right) => {
                    let (l, r) = (left.eval()?, right.eval()?);
                    let value = match op {
                        BinaryOp::Add => l + r,
                        BinaryOp::Sub => l - r,
                        BinaryOp::Mul => l * r,
                        BinaryOp::Div if r == 0.0 => return Err(CalcErrorKind::DivisionByZero),
                        BinaryOp::Div => l / r,
                        BinaryOp::Rem if r == 0.0 => return Err(CalcErrorKind::ModuloByZero),
                        BinaryOp::Rem => l % r,
                        BinaryOp::Pow if l == 0.0 && r < 0.0 => {
                            return Err(CalcErrorKind::DivisionByZero);
                        }
                        BinaryOp::Pow => l.powf(r),
                    };
                    match value {
                        v if v.is_nan() => Err(CalcErrorKind::NotANumber),
                        v if v.is_infinite() => Err(CalcErrorKind::Overflow),
                        v => Ok(v),
                    }
                }
            }
        }
    }

    fn literal() -> impl Strategy<Value = Tree> {
        prop_oneof![
            (0u64..20).prop_map(|n| n.to_string()),
            (0u64..1_000_000, 0u32..10_000).prop_map(|(i, f)| format!("{i}.{f}")),
            (0u32..1000).prop_map(|f| format!(".{f}")),
            Just("0".to_owned()),
            Just("1".repeat(200)),
        ]
        .prop_map(Tree::Literal)
    }

    fn tree() -> impl Strategy<Value = Tree> {
        literal().prop_recursive(6, 48, 2, |inner| {
            let ops = prop_oneof![
                Just((BinaryOp::Add, "+")),
                Just((BinaryOp::Sub, "-")),
                Just((BinaryOp::Mul, "*")),
                Just((BinaryOp::Div, "/")),
                Just((BinaryOp::Rem, "%")),
                Just((BinaryOp::Pow, "^")),
                Just((BinaryOp::Pow, "**")),
            ];
            prop_oneof![
                inner.clone().prop_map(|t| Tree::Neg(Box::new(t))),
                (ops, inner.clone(), inner).prop_map(|((op, symbol), l, r)| {
                    Tree::Binary(op, symbol, Box::new(l), Box::new(r))
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn matches_direct_evaluation(tree in tree()) {
            let expr = tree.render();
            prop_assume!(expr.len() <= MAX_EXPRESSION_LEN);
            match (evaluate(&expr), tree.eval()) {
                (Ok(got), Ok(want)) => {
                    prop_assert_eq!(got.to_bits(), want.to_bits(), "{} = {} vs {}", expr, got, want);
                    prop_assert!(got.is_finite());
                }
                (Err(got), Err(want)) => prop_assert_eq!(got.kind, want, "{}", expr),
                (got, want) => prop_assert!(false, "{}: parser {:?}, reference {:?}", expr, got, want),
            }
        }

        #[test]
        fn arbitrary_strings_never_panic(expr in "\\PC{0,64}") {
            let result = evaluate(&expr);
            if let Ok(value) = result {
                prop_assert!(value.is_finite());
                let _ = (format_number(value), to_json_number(value));
            }
        }

        #[test]
        fn arbitrary_calculator_alphabet_never_panics(expr in "[0-9.+*/%^() eE-]{0,80}") {
            match evaluate(&expr) {
                Ok(value) => prop_assert!(value.is_finite()),
                Err(error) => {
                    // Positions always point into the input or one past its end.
                    prop_assert!(error.position >= 1);
                    prop_assert!(error.position <= expr.chars().count() + 1);
                }
            }
        }

        #[test]
        fn arbitrary_unicode_and_control_never_panic(expr in any::<String>()) {
            let _ = evaluate(&expr);
        }
    }
}

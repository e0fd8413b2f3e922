//! The lexer and parser of the label selector string form.

use super::error::SelectorError;
use super::requirement::{Operator, Requirement};

// ----- lexer and parser ----------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tok<'a> {
    Ident(&'a str),
    Eq,
    DoubleEq,
    NotEq,
    Bang,
    Open,
    Close,
    Comma,
    In,
    NotIn,
    Gt,
    Lt,
    End,
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

/// Splits a selector into tokens with their byte offsets; always ends with `End`.
pub(super) fn lex(input: &str) -> Vec<(usize, Tok<'_>)> {
    let mut out = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        let tok = match c {
            '(' => Tok::Open,
            ')' => Tok::Close,
            ',' => Tok::Comma,
            '>' => Tok::Gt,
            '<' => Tok::Lt,
            '=' | '!' => {
                if chars.peek().is_some_and(|(_, n)| *n == '=') {
                    chars.next();
                    if c == '=' { Tok::DoubleEq } else { Tok::NotEq }
                } else if c == '=' {
                    Tok::Eq
                } else {
                    Tok::Bang
                }
            }
            _ => {
                let mut end = at + c.len_utf8();
                while let Some(&(i, n)) = chars.peek() {
                    if n.is_whitespace() || is_special(n) {
                        break;
                    }
                    end = i + n.len_utf8();
                    chars.next();
                }
                match &input[at..end] {
                    "in" => Tok::In,
                    "notin" => Tok::NotIn,
                    word => Tok::Ident(word),
                }
            }
        };
        out.push((at, tok));
    }
    out.push((input.len(), Tok::End));
    out
}

fn describe(tok: Tok<'_>) -> String {
    match tok {
        Tok::Ident(s) => format!("{s:?}"),
        Tok::Eq => "'='".into(),
        Tok::DoubleEq => "'=='".into(),
        Tok::NotEq => "'!='".into(),
        Tok::Bang => "'!'".into(),
        Tok::Open => "'('".into(),
        Tok::Close => "')'".into(),
        Tok::Comma => "','".into(),
        Tok::In => "'in'".into(),
        Tok::NotIn => "'notin'".into(),
        Tok::Gt => "'>'".into(),
        Tok::Lt => "'<'".into(),
        Tok::End => "end of input".into(),
    }
}

pub(super) struct Parser<'a> {
    pub(super) selector: &'a str,
    pub(super) tokens: Vec<(usize, Tok<'a>)>,
    pub(super) pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> (usize, Tok<'a>) {
        self.tokens
            .get(self.pos)
            .copied()
            .unwrap_or((self.selector.len(), Tok::End))
    }

    fn next(&mut self) -> (usize, Tok<'a>) {
        let t = self.peek();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn syntax(&self, (position, tok): (usize, Tok<'_>), expected: &'static str) -> SelectorError {
        SelectorError::Syntax {
            selector: self.selector.to_owned(),
            position,
            found: describe(tok),
            expected,
        }
    }

    pub(super) fn parse_all(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut out = Vec::new();
        if self.peek().1 == Tok::End {
            return Ok(out);
        }
        loop {
            out.push(self.parse_requirement()?);
            match self.next() {
                (_, Tok::End) => return Ok(out),
                (_, Tok::Comma) => {
                    let after = self.peek();
                    if after.1 == Tok::End {
                        return Err(self.syntax(after, "a requirement after ','"));
                    }
                }
                other => return Err(self.syntax(other, "',' or end of input")),
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, SelectorError> {
        let (position, tok) = self.next();
        match tok {
            Tok::Bang => {
                let key = match self.next() {
                    (_, Tok::Ident(k)) => k,
                    (_, Tok::In) => "in",
                    (_, Tok::NotIn) => "notin",
                    other => return Err(self.syntax(other, "a label key after '!'")),
                };
                Requirement::new(key, Operator::DoesNotExist, [])
            }
            Tok::Ident(key) => self.parse_restriction(key),
            Tok::Eq | Tok::DoubleEq | Tok::NotEq | Tok::Gt | Tok::Lt => {
                Err(SelectorError::EmptyKey {
                    selector: self.selector.to_owned(),
                    position,
                })
            }
            _ => Err(self.syntax((position, tok), "a label key or '!key'")),
        }
    }

    fn parse_restriction(&mut self, key: &'a str) -> Result<Requirement, SelectorError> {
        let tok = self.peek();
        match tok.1 {
            Tok::Comma | Tok::End => Requirement::new(key, Operator::Exists, []),
            Tok::Eq | Tok::DoubleEq => {
                self.next();
                let value = self.parse_exact_value()?;
                Requirement::new(key, Operator::Equals, [value])
            }
            Tok::NotEq => {
                self.next();
                let value = self.parse_exact_value()?;
                Requirement::new(key, Operator::NotEquals, [value])
            }
            Tok::Gt | Tok::Lt => {
                self.next();
                let op = if tok.1 == Tok::Gt {
                    Operator::GreaterThan
                } else {
                    Operator::LessThan
                };
                let value = self.parse_exact_value()?;
                Requirement::new(key, op, [value])
            }
            Tok::In | Tok::NotIn => {
                self.next();
                let op = if tok.1 == Tok::In {
                    Operator::In
                } else {
                    Operator::NotIn
                };
                let values = self.parse_value_list()?;
                Requirement::new(key, op, values)
            }
            _ => Err(self.syntax(
                tok,
                "'=', '==', '!=', 'in', 'notin', ',' or end of input after the key",
            )),
        }
    }

    /// The value after `=`, `==`, `!=`, `>` or `<`; nothing (end or `,`) means the empty value.
    fn parse_exact_value(&mut self) -> Result<String, SelectorError> {
        let tok = self.peek();
        let value = match tok.1 {
            Tok::Comma | Tok::End => return Ok(String::new()),
            Tok::Ident(v) => v,
            Tok::In => "in",
            Tok::NotIn => "notin",
            _ => return Err(self.syntax(tok, "a value")),
        };
        self.next();
        Ok(value.to_owned())
    }

    /// `( v1, v2, ... )`; empty entries between commas stand for the empty value.
    fn parse_value_list(&mut self) -> Result<Vec<String>, SelectorError> {
        let open = self.next();
        if open.1 != Tok::Open {
            return Err(self.syntax(open, "'(' to start the list of values"));
        }
        let mut values = Vec::new();
        let mut expecting_value = true;
        let mut saw_comma = false;
        loop {
            let tok = self.next();
            match tok.1 {
                Tok::Ident(v) if expecting_value => {
                    values.push(v.to_owned());
                    expecting_value = false;
                }
                Tok::In | Tok::NotIn if expecting_value => {
                    values.push(if tok.1 == Tok::In { "in" } else { "notin" }.to_owned());
                    expecting_value = false;
                }
                Tok::Comma => {
                    if expecting_value {
                        values.push(String::new());
                    }
                    expecting_value = true;
                    saw_comma = true;
                }
                Tok::Close => {
                    if expecting_value && saw_comma {
                        values.push(String::new());
                    }
                    return Ok(values);
                }
                Tok::End => {
                    return Err(SelectorError::UnbalancedParens {
                        selector: self.selector.to_owned(),
                        position: open.0,
                    });
                }
                _ if expecting_value => return Err(self.syntax(tok, "a value, ',' or ')'")),
                _ => return Err(self.syntax(tok, "',' or ')'")),
            }
        }
    }
}

//! Bearer tokens from `api.token_file`: one per line, read again when the
//! file changes. Only SHA-256 digests are kept, and a presented token is
//! compared against every digest in constant time, so neither a token's
//! content nor its length nor which one matched shows in the timing. No
//! token is ever logged: errors name the file and the line.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use hyper::header::HeaderValue;

use super::watch::Watched;
use crate::sync;

/// A token shorter than this is refused as guessable.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The longest `Authorization` value looked at; longer ones are wrong.
const MAX_AUTHORIZATION_BYTES: usize = 4096;

/// Why the token file cannot be used. At start-up engage refuses to start;
/// on a reload the previous tokens stay in use until the file is fixed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("cannot read api.token_file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a usable token (its content is never shown).
    #[error("api.token_file {path} line {line}: {problem}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// No token at all: nobody could use the API.
    #[error("api.token_file {path} holds no token (one per line; # starts a comment)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Why a request was refused; decides the `WWW-Authenticate` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// A bearer token that is not in the file.
    Invalid,
}

/// Who may use the API.
pub struct Auth {
    tokens: Option<TokenFile>,
}

struct TokenFile {
    path: PathBuf,
    digests: RwLock<Arc<Vec<[u8; 32]>>>,
    watched: Watched,
}

impl Auth {
    /// Anyone (`api.allow_unauthenticated`).
    pub fn open() -> Auth {
        Auth { tokens: None }
    }

    /// The tokens in `path`; fails when it cannot be read or holds no
    /// usable token.
    pub fn from_file(path: &Path) -> Result<Auth, TokenError> {
        let watched = Watched::new(path);
        let text = watched.read().map_err(|source| TokenError::Read { path: path.into(), source })?;
        let digests = parse(path, &text)?;
        Ok(Auth { tokens: Some(TokenFile { path: path.into(), digests: RwLock::new(Arc::new(digests)), watched }) })
    }

    /// Whether tokens are required.
    pub fn required(&self) -> bool {
        self.tokens.is_some()
    }

    /// Reads the token file again if it changed. `Ok(Some(n))`: now `n`
    /// tokens; `Ok(None)`: unchanged; an error leaves the previous tokens
    /// in use. An emptied file is taken: it revokes every token.
    pub fn reload(&self) -> Result<Option<usize>, TokenError> {
        let Some(t) = &self.tokens else { return Ok(None) };
        let changed = t.watched.changed().map_err(|source| TokenError::Read { path: t.path.clone(), source })?;
        let Some(text) = changed else { return Ok(None) };
        let digests = match parse(&t.path, &text) {
            Ok(d) => d,
            Err(TokenError::Empty { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        let n = digests.len();
        *sync::write(&t.digests) = Arc::new(digests);
        Ok(Some(n))
    }

    /// Checks a request's `Authorization` header.
    pub fn check(&self, authorization: Option<&HeaderValue>) -> Result<(), Refusal> {
        let Some(t) = &self.tokens else { return Ok(()) };
        let Some(value) = authorization else { return Err(Refusal::Missing) };
        let value = value.as_bytes();
        if value.len() > MAX_AUTHORIZATION_BYTES {
            return Err(Refusal::Invalid);
        }
        // RFC 9110: the scheme is case-insensitive.
        let Some(token) =
            value.get(..7).filter(|s| s.eq_ignore_ascii_case(b"bearer ")).map(|_| value[7..].trim_ascii())
        else {
            return Err(Refusal::Missing);
        };
        let presented = digest(token);
        let digests = sync::read(&t.digests).clone();
        // Every digest is compared, whatever matched first.
        let mut found = 0u8;
        for d in digests.iter() {
            found |= constant_time_eq(&presented, d);
        }
        if found == 1 { Ok(()) } else { Err(Refusal::Invalid) }
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// 1 when equal, else 0, in time independent of where they differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> u8 {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= std::hint::black_box(x ^ y);
    }
    u8::from(std::hint::black_box(diff) == 0)
}

/// The digests of the tokens in a token file's text.
fn parse(path: &Path, text: &[u8]) -> Result<Vec<[u8; 32]>, TokenError> {
    let mut digests = Vec::new();
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        let token = line.trim_ascii();
        if token.is_empty() || token.starts_with(b"#") {
            continue;
        }
        let problem = if token.len() < MIN_TOKEN_BYTES {
            Some("a token must be at least 16 characters")
        } else if !token.iter().all(|b| b.is_ascii_graphic()) {
            Some("a token must be printable ASCII without spaces (it travels in an HTTP header)")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(TokenError::Line { path: path.into(), line: i + 1, problem });
        }
        digests.push(digest(token));
    }
    if digests.is_empty() {
        return Err(TokenError::Empty { path: path.into() });
    }
    Ok(digests)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "token-aaaaaaaaaaaaaaaa";
    const B: &str = "token-bbbbbbbbbbbbbbbb";

    fn bearer(t: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {t}")).unwrap()
    }

    #[test]
    fn a_listed_token_passes_others_and_none_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, format!("# clients\n{A}\n\n  {B}  \n")).unwrap();
        let auth = Auth::from_file(&path).unwrap();
        assert!(auth.required());
        assert_eq!(auth.check(Some(&bearer(A))), Ok(()));
        assert_eq!(auth.check(Some(&bearer(B))), Ok(()));
        assert_eq!(auth.check(Some(&HeaderValue::from_str(&format!("bearer {A}")).unwrap())), Ok(()));
        assert_eq!(auth.check(None), Err(Refusal::Missing));
        assert_eq!(auth.check(Some(&HeaderValue::from_static("Basic dXNlcjpwYXNz"))), Err(Refusal::Missing));
        assert_eq!(auth.check(Some(&bearer("token-cccccccccccccccc"))), Err(Refusal::Invalid));
        assert_eq!(auth.check(Some(&bearer(&A[..A.len() - 1]))), Err(Refusal::Invalid), "a prefix is not the token");
        assert_eq!(auth.check(Some(&bearer(""))), Err(Refusal::Invalid));
        assert_eq!(Auth::open().check(None), Ok(()));
    }

    #[test]
    fn a_changed_file_replaces_the_tokens_and_a_broken_one_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, format!("{A}\n")).unwrap();
        let auth = Auth::from_file(&path).unwrap();
        assert_eq!(auth.reload().unwrap(), None, "unchanged");
        std::fs::write(&path, format!("{A}\n{B}\n")).unwrap();
        assert_eq!(auth.reload().unwrap(), Some(2));
        assert_eq!(auth.check(Some(&bearer(B))), Ok(()));
        std::fs::write(&path, format!("{B}\n")).unwrap();
        assert_eq!(auth.reload().unwrap(), Some(1));
        assert_eq!(auth.check(Some(&bearer(A))), Err(Refusal::Invalid), "rotated out");
        // A broken file names the line, never the content, and changes nothing.
        std::fs::write(&path, format!("{B}\nshort\n")).unwrap();
        let err = auth.reload().unwrap_err().to_string();
        assert!(err.contains("line 2") && !err.contains("short") && !err.contains(B), "{err}");
        assert_eq!(auth.check(Some(&bearer(B))), Ok(()));
        // An emptied file revokes everything.
        std::fs::write(&path, "# none\n").unwrap();
        assert_eq!(auth.reload().unwrap(), Some(0));
        assert_eq!(auth.check(Some(&bearer(B))), Err(Refusal::Invalid));
    }

    #[test]
    fn start_up_refuses_a_missing_empty_or_weak_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        assert!(matches!(Auth::from_file(&path), Err(TokenError::Read { .. })));
        std::fs::write(&path, "\n# nothing\n").unwrap();
        assert!(matches!(Auth::from_file(&path), Err(TokenError::Empty { .. })));
        std::fs::write(&path, "tooshort\n").unwrap();
        assert!(matches!(Auth::from_file(&path), Err(TokenError::Line { line: 1, .. })));
        std::fs::write(&path, "with a space in it, long enough\n").unwrap();
        assert!(matches!(Auth::from_file(&path), Err(TokenError::Line { line: 1, .. })));
    }
}

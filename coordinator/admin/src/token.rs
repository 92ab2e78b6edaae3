//! The admin API's bearer token: a file of 64 hex digits (32 random bytes), created 0600 at
//! first start, compared in constant time. Its Debug never shows it.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rand_core::{OsRng, RngCore};
use subtle::ConstantTimeEq;

use crate::error::{AdminError, Result};

/// The file name next to the database when no token file is given.
pub const TOKEN_FILE_NAME: &str = "admin.token";

/// A secret bearer token.
#[derive(Clone)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A token from text (surrounding whitespace trimmed); refuses an empty one.
    pub fn new(text: &str) -> Option<Token> {
        let text = text.trim();
        (!text.is_empty()).then(|| Token(text.to_owned()))
    }

    /// 32 random bytes as 64 lowercase hex digits.
    pub fn generate() -> Token {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        Token(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The secret, to hand to a client (tests, a CLI talking to the API).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }

    /// Whether an `Authorization` header value is `Bearer <this token>`.
    pub fn authorizes(&self, header: Option<&[u8]>) -> bool {
        let Some(value) = header else { return false };
        let Some(scheme) = value.get(..7) else {
            return false;
        };
        scheme.eq_ignore_ascii_case(b"bearer ") && self.matches(value.get(7..).unwrap_or(&[]))
    }
}

/// Reads the token at `path`, or creates it (0600, random) when the file does not exist. A
/// file group or others can read is refused, as is an empty one.
pub fn load_or_create_token(path: &Path) -> Result<Token> {
    let fail = |reason: String| AdminError::TokenFile {
        path: path.to_path_buf(),
        reason,
    };
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(fail(format!(
                    "readable by group or others (mode {:o}); chmod 600 it",
                    mode & 0o777
                )));
            }
            let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
            Token::new(&text).ok_or_else(|| fail("empty".into()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = Token::generate();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| fail(format!("creating: {e}")))?;
            file.write_all(format!("{}\n", token.0).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| fail(format!("writing: {e}")))?;
            tracing::info!(path = %path.display(), "created the admin API token");
            Ok(token)
        }
        Err(e) => Err(fail(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_must_carry_exactly_the_token() {
        let token = Token::new("abc123").unwrap();
        assert!(token.authorizes(Some(b"Bearer abc123")));
        assert!(token.authorizes(Some(b"bearer abc123")));
        assert!(!token.authorizes(None));
        assert!(!token.authorizes(Some(b"Bearer abc124")));
        assert!(!token.authorizes(Some(b"Bearer abc1234")));
        assert!(!token.authorizes(Some(b"Bearer ")));
        assert!(!token.authorizes(Some(b"Basic abc123")));
        assert!(!token.authorizes(Some(b"abc123")));
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
    }

    #[test]
    fn token_file_is_created_0600_then_reread_and_lax_modes_refused() {
        let dir = std::env::temp_dir().join(format!("mg-admin-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(TOKEN_FILE_NAME);
        let first = load_or_create_token(&path).unwrap();
        assert_eq!(first.expose().len(), 64);
        assert!(first.expose().bytes().all(|b| b.is_ascii_hexdigit()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = load_or_create_token(&path).unwrap();
        assert_eq!(first.expose(), again.expose());
        assert_ne!(Token::generate().expose(), first.expose());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_token(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");

        let empty = dir.join("empty");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&empty)
            .unwrap();
        assert!(load_or_create_token(&empty).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The config's one error: a key with what is wrong with it and what to write instead, or
//! text that is not YAML at all.

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {path}: {message}")]
    Key { path: String, message: String },
    #[error("config is not valid YAML: {0}")]
    Syntax(String),
}

/// A [`ConfigError`] naming `path` (drivers' own checks use it too).
pub fn key_err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        path: path.into(),
        message: message.into(),
    }
}

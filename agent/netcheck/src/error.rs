/// Errors of the tokio shell (the sans-I/O core has none: bad input is ignored and counted).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("netcheck socket: {0}")]
    Socket(#[from] std::io::Error),
}

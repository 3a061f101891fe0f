//! Reading framed messages from a byte stream (a QUIC stream, for every control channel).
//! The crate's only IO, behind the `stream` feature.

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::DecodeError;

/// How much is read from the stream at a time.
const CHUNK: usize = 64 * 1024;

/// Why no message could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The bytes were not a message.
    #[error(transparent)]
    Malformed(#[from] DecodeError),
    /// The stream ended.
    #[error("the stream ended")]
    Closed,
    /// Reading failed (the stream was reset, the connection lost).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads length-prefixed messages (see [`crate::decode`]) from a stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    recv: R,
    buf: Vec<u8>,
    chunk: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader of `recv`.
    pub fn new(recv: R) -> Self {
        Self {
            recv,
            buf: Vec::new(),
            chunk: vec![0; CHUNK],
        }
    }

    /// The next message, reading as much as it takes.
    pub async fn next<M: serde::de::DeserializeOwned>(&mut self) -> Result<M, ReadError> {
        loop {
            if let Some((message, used)) = crate::decode(&self.buf)? {
                self.buf.drain(..used);
                return Ok(message);
            }
            match self.recv.read(&mut self.chunk).await? {
                0 => return Err(ReadError::Closed),
                n => self.buf.extend_from_slice(&self.chunk[..n]),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_split_across_reads_come_out_whole_and_garbage_is_an_error() {
        let mut bytes = Vec::new();
        crate::encode(&"first".to_owned(), &mut bytes);
        crate::encode(&"second".to_owned(), &mut bytes);
        let (mut tx, rx) = tokio::io::duplex(3);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            tx.write_all(&bytes).await.unwrap();
        });
        let mut reader = FrameReader::new(rx);
        assert_eq!(reader.next::<String>().await.unwrap(), "first");
        assert_eq!(reader.next::<String>().await.unwrap(), "second");
        writer.await.unwrap();
        assert!(matches!(
            reader.next::<String>().await,
            Err(ReadError::Closed)
        ));

        let (mut tx, rx) = tokio::io::duplex(64);
        {
            use tokio::io::AsyncWriteExt;
            tx.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        }
        let err = FrameReader::new(rx).next::<String>().await.unwrap_err();
        assert!(matches!(err, ReadError::Malformed(_)), "{err}");
    }
}

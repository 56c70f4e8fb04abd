//! The byte framing between the caller and a jail or zygote helper.
//!
//! Caller → helper (helper's stdin): `u32 LE length`, the JSON [`JailSpec`], then the program
//! text until EOF. Helper → caller (helper's stdout): `u32 LE length`, the JSON [`JailOutcome`],
//! `u64 LE` stdout length, stdout bytes, `u64 LE` stderr length, stderr bytes.

use crate::spec::{JailOutcome, JailSpec};
use std::io::{self, Read, Write};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("jail protocol i/o: {0}")]
    Io(#[from] io::Error),
    #[error("jail protocol: bad JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("jail protocol: frame of {0} bytes is too large")]
    TooLarge(u64),
}

const MAX_HEADER: u64 = 16 << 20;

pub fn encode_request(spec: &JailSpec, code: &[u8]) -> Result<Vec<u8>, FrameError> {
    let header = serde_json::to_vec(spec)?;
    let mut out = Vec::with_capacity(4 + header.len() + code.len());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(code);
    Ok(out)
}

pub fn encode_outcome(outcome: &JailOutcome, mut out: impl Write) -> Result<(), FrameError> {
    let header = serde_json::to_vec(outcome)?;
    out.write_all(&(header.len() as u32).to_le_bytes())?;
    out.write_all(&header)?;
    for stream in [&outcome.stdout, &outcome.stderr] {
        out.write_all(&(stream.len() as u64).to_le_bytes())?;
        out.write_all(stream)?;
    }
    out.flush()?;
    Ok(())
}

pub fn decode_outcome(bytes: &[u8]) -> Result<JailOutcome, FrameError> {
    let mut input = bytes;
    let header = read_frame(&mut input, 4)?;
    let mut outcome: JailOutcome = serde_json::from_slice(&header)?;
    outcome.stdout = read_frame(&mut input, 8)?;
    outcome.stderr = read_frame(&mut input, 8)?;
    Ok(outcome)
}

/// Writes a `u32 LE` length and the JSON of `value`.
pub fn write_json<T: serde::Serialize>(mut out: impl Write, value: &T) -> Result<(), FrameError> {
    let bytes = serde_json::to_vec(value)?;
    out.write_all(&(bytes.len() as u32).to_le_bytes())?;
    out.write_all(&bytes)?;
    out.flush()?;
    Ok(())
}

/// Reads what [`write_json`] wrote.
pub fn read_json<T: serde::de::DeserializeOwned>(mut input: impl Read) -> Result<T, FrameError> {
    Ok(serde_json::from_slice(&read_frame(&mut input, 4)?)?)
}

/// Writes a `u64 LE` length and the bytes.
pub fn write_bytes(mut out: impl Write, bytes: &[u8]) -> Result<(), FrameError> {
    out.write_all(&(bytes.len() as u64).to_le_bytes())?;
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

/// Reads what [`write_bytes`] wrote.
pub fn read_bytes(mut input: impl Read) -> Result<Vec<u8>, FrameError> {
    read_frame(&mut input, 8)
}

fn read_frame(input: &mut impl Read, width: usize) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 8];
    input.read_exact(&mut len[..width])?;
    let len = u64::from_le_bytes(len);
    if width == 4 && len > MAX_HEADER {
        return Err(FrameError::TooLarge(len));
    }
    let mut buf = vec![0u8; usize::try_from(len).map_err(|_| FrameError::TooLarge(len))?];
    input.read_exact(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_round_trips_with_binary_output() {
        let outcome = JailOutcome {
            exit_code: Some(3),
            stdout: vec![0xff, 0, b'a'],
            stderr: b"boom\n".to_vec(),
            ..Default::default()
        };
        let mut buf = Vec::new();
        encode_outcome(&outcome, &mut buf).unwrap();
        assert_eq!(decode_outcome(&buf).unwrap(), outcome);
    }

    #[test]
    fn truncated_outcome_is_an_error() {
        let mut buf = Vec::new();
        encode_outcome(&JailOutcome::default(), &mut buf).unwrap();
        assert!(decode_outcome(&buf[..buf.len() - 3]).is_err());
    }
}

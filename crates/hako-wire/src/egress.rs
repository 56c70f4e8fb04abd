//! The egress link: how a jail helper registers a proxy-mode run with the egress guard.
//!
//! Unix stream, one per run:
//! 1. helper → guard: `u32 LE length` + JSON [`Registration`], sent with the run's listening
//!    socket attached (SCM_RIGHTS; hako-jail's `netns` attaches it, hako-net's guard takes it);
//! 2. guard → helper: [`Answer`]: `K` (accepted) or `E` + why;
//! 3. the helper half-closes the link when the run ends; guard → helper: the JSON
//!    [`NetworkReport`] until EOF.

pub use crate::spec::NetworkReport;
use serde::{Deserialize, Serialize};

/// The port the guard's listener has inside every proxy-mode run (Squid's, as Dify uses).
pub const EGRESS_PORT: u16 = 3128;
/// Largest registration or report accepted.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Bytes of the registration frame's length prefix.
const LEN_BYTES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("registration too large ({0} bytes)")]
    TooLarge(usize),
    #[error("bad registration: {0}")]
    Registration(#[source] serde_json::Error),
    #[error("{0} bytes after the registration")]
    Trailing(usize),
    #[error("bad report: {0}")]
    Report(#[source] serde_json::Error),
    #[error("encode: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("the guard closed the connection")]
    NoAnswer,
    #[error("unknown answer byte {0:#04x}")]
    UnknownAnswer(u8),
}

/// What the helper tells the guard about a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registration {
    pub run_id: String,
}

impl Registration {
    /// The frame: `u32 LE length` + JSON.
    pub fn encode(&self) -> Result<Vec<u8>, EgressError> {
        let body = serde_json::to_vec(self).map_err(EgressError::Encode)?;
        if body.len() > MAX_MESSAGE {
            return Err(EgressError::TooLarge(body.len()));
        }
        let mut frame = Vec::with_capacity(LEN_BYTES + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&body);
        Ok(frame)
    }

    /// The whole frame's length, once its prefix is among the bytes `received` so far.
    pub fn frame_len(received: &[u8]) -> Result<Option<usize>, EgressError> {
        let Some(prefix) = received.first_chunk::<LEN_BYTES>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(*prefix) as usize;
        if len > MAX_MESSAGE {
            return Err(EgressError::TooLarge(len));
        }
        Ok(Some(LEN_BYTES + len))
    }

    /// Decodes the bytes received so far: `None` while the frame is incomplete.
    pub fn decode(received: &[u8]) -> Result<Option<Registration>, EgressError> {
        let Some(total) = Registration::frame_len(received)? else {
            return Ok(None);
        };
        if received.len() < total {
            return Ok(None);
        }
        if received.len() > total {
            return Err(EgressError::Trailing(received.len() - total));
        }
        serde_json::from_slice(&received[LEN_BYTES..])
            .map(Some)
            .map_err(EgressError::Registration)
    }
}

/// The guard's answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Accepted,
    Refused(String),
}

impl Answer {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Answer::Accepted => b"K".to_vec(),
            Answer::Refused(why) => [b"E", why.as_bytes()].concat(),
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Answer, EgressError> {
        match bytes.split_first() {
            Some((b'K', _)) => Ok(Answer::Accepted),
            Some((b'E', why)) => Ok(Answer::Refused(String::from_utf8_lossy(why).into_owned())),
            Some((other, _)) => Err(EgressError::UnknownAnswer(*other)),
            None => Err(EgressError::NoAnswer),
        }
    }
}

/// The report the guard sends after the helper's half-close (JSON until EOF).
pub fn encode_report(report: &NetworkReport) -> Result<Vec<u8>, EgressError> {
    serde_json::to_vec(report).map_err(EgressError::Encode)
}

pub fn decode_report(bytes: &[u8]) -> Result<NetworkReport, EgressError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(EgressError::TooLarge(bytes.len()));
    }
    serde_json::from_slice(bytes).map_err(EgressError::Report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration() -> Registration {
        Registration {
            run_id: "run-7".into(),
        }
    }

    #[test]
    fn a_registration_round_trips_byte_by_byte() {
        let frame = registration().encode().unwrap();
        assert_eq!(&frame[..4], &(frame.len() as u32 - 4).to_le_bytes());
        for cut in 0..frame.len() {
            assert_eq!(Registration::decode(&frame[..cut]).unwrap(), None, "{cut}");
        }
        assert_eq!(Registration::decode(&frame).unwrap(), Some(registration()));
        assert_eq!(Registration::frame_len(&frame).unwrap(), Some(frame.len()));
    }

    #[test]
    fn a_length_over_the_limit_is_refused_before_the_body_arrives() {
        let prefix = (MAX_MESSAGE as u32 + 1).to_le_bytes();
        assert!(matches!(
            Registration::frame_len(&prefix),
            Err(EgressError::TooLarge(n)) if n == MAX_MESSAGE + 1
        ));
        assert!(matches!(
            Registration::decode(&prefix),
            Err(EgressError::TooLarge(_))
        ));
    }

    #[test]
    fn malformed_registrations_are_errors() {
        let mut not_json = 3u32.to_le_bytes().to_vec();
        not_json.extend_from_slice(b"{{{");
        assert!(matches!(
            Registration::decode(&not_json),
            Err(EgressError::Registration(_))
        ));
        let mut wrong_shape = 12u32.to_le_bytes().to_vec();
        wrong_shape.extend_from_slice(br#"{"run_id":1}"#);
        assert!(matches!(
            Registration::decode(&wrong_shape),
            Err(EgressError::Registration(_))
        ));
        let mut trailing = registration().encode().unwrap();
        trailing.extend_from_slice(b"xx");
        assert!(matches!(
            Registration::decode(&trailing),
            Err(EgressError::Trailing(2))
        ));
    }

    #[test]
    fn answers_round_trip_and_unknown_ones_are_errors() {
        for answer in [Answer::Accepted, Answer::Refused("no listener".into())] {
            assert_eq!(Answer::decode(&answer.encode()).unwrap(), answer);
        }
        assert!(matches!(Answer::decode(b""), Err(EgressError::NoAnswer)));
        assert!(matches!(
            Answer::decode(b"X"),
            Err(EgressError::UnknownAnswer(b'X'))
        ));
        assert_eq!(
            Answer::decode(b"E\xffbad").unwrap(),
            Answer::Refused("\u{fffd}bad".into())
        );
    }

    #[test]
    fn a_report_round_trips_and_garbage_is_an_error() {
        let report = NetworkReport {
            connections: 2,
            refused: vec!["10.0.0.1:80".into()],
            limit: Some("bytes".into()),
            ..Default::default()
        };
        let bytes = encode_report(&report).unwrap();
        assert_eq!(decode_report(&bytes).unwrap(), report);
        assert!(matches!(
            decode_report(b"{\"connections\":"),
            Err(EgressError::Report(_))
        ));
        assert!(matches!(
            decode_report(&vec![b' '; MAX_MESSAGE + 1]),
            Err(EgressError::TooLarge(_))
        ));
    }
}

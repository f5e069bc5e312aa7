//! 0800 → 0810 network management: sign-on, sign-off, echo.

use super::{ResponseCode, check_transmission_time, echo, stan_text, typed_message};
use crate::error::Error;
use crate::message::Message;

/// Field 70.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NetworkCode {
    /// 001, after connecting and before any financial message.
    SignOn,
    /// 002, on graceful shutdown.
    SignOff,
    /// 301, when the link is idle.
    Echo,
}

impl NetworkCode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkCode::SignOn => "001",
            NetworkCode::SignOff => "002",
            NetworkCode::Echo => "301",
        }
    }

    pub fn parse(code: &str) -> Result<NetworkCode, Error> {
        match code {
            "001" => Ok(NetworkCode::SignOn),
            "002" => Ok(NetworkCode::SignOff),
            "301" => Ok(NetworkCode::Echo),
            _ => Err(Error::BadValue {
                field: 70,
                reason: "network management code is not 001, 002 or 301",
            }),
        }
    }
}

typed_message!(
    /// 0800: fields 7, 11, 70.
    NetworkRequest,
    mtis: ["0800"],
    mandatory: [7, 11, 70]
);

impl NetworkRequest {
    /// `transmitted_at` is field 7, MMDDhhmmss in UTC.
    pub fn new(
        code: NetworkCode,
        stan: u32,
        transmitted_at: &str,
    ) -> Result<NetworkRequest, Error> {
        let mut m = Message::new("0800")?;
        m.set(7, transmitted_at)?
            .set(11, &stan_text(stan)?)?
            .set(70, code.as_str())?;
        m.try_into()
    }

    pub fn code(&self) -> NetworkCode {
        self.0
            .get(70)
            .and_then(|c| NetworkCode::parse(c).ok())
            .unwrap_or(NetworkCode::Echo)
    }

    /// The 0810 answer: fields 7, 11 and 70 echoed, field 39 `code`.
    pub fn answer(&self, code: ResponseCode) -> Result<NetworkResponse, Error> {
        let mut m = Message::new("0810")?;
        echo(&self.0, &mut m, &[7, 11])?;
        m.set(39, code.as_str())?;
        echo(&self.0, &mut m, &[70])?;
        m.try_into()
    }

    fn check(m: &Message) -> Result<(), Error> {
        check_transmission_time(m)?;
        NetworkCode::parse(m.get(70).unwrap_or_default()).map(|_| ())
    }
}

typed_message!(
    /// 0810: fields 7, 11, 39, 70.
    NetworkResponse,
    mtis: ["0810"],
    mandatory: [7, 11, 39, 70]
);

impl NetworkResponse {
    pub fn response_code(&self) -> ResponseCode {
        response_code_of(&self.0)
    }

    pub fn code(&self) -> NetworkCode {
        self.0
            .get(70)
            .and_then(|c| NetworkCode::parse(c).ok())
            .unwrap_or(NetworkCode::Echo)
    }

    fn check(m: &Message) -> Result<(), Error> {
        ResponseCode::parse(m.get(39).unwrap_or_default())?;
        NetworkCode::parse(m.get(70).unwrap_or_default()).map(|_| ())
    }
}

/// Field 39 of a checked response (checked at construction, so the fallback is never taken).
pub(super) fn response_code_of(m: &Message) -> ResponseCode {
    m.get(39)
        .and_then(|c| ResponseCode::parse(c).ok())
        .unwrap_or(ResponseCode::SystemMalfunction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_on_and_its_answer_match_the_vectors() {
        let req = NetworkRequest::new(NetworkCode::SignOn, 1, "1128101010").expect("valid");
        assert_eq!(
            req.pack().expect("pack"),
            hex_vector(
                "30383030383232303030303030303030303030303034303030303030303030303030303031313238313031303130303030303031303031"
            )
        );
        let resp = req.answer(ResponseCode::Approved).expect("valid");
        assert_eq!(
            resp.pack().expect("pack"),
            hex_vector(
                "303831303832323030303030303230303030303030343030303030303030303030303030313132383130313031303030303030313030303031"
            )
        );
        assert_eq!(resp.code(), NetworkCode::SignOn);
        assert!(resp.response_code().is_approved());
        assert_eq!(resp.stan(), "000001");
    }

    #[test]
    fn rejects_unknown_codes_and_impossible_times() {
        assert!(NetworkRequest::new(NetworkCode::Echo, 1_000_000, "1128101010").is_err());
        assert!(matches!(
            NetworkRequest::new(NetworkCode::Echo, 1, "1328101010"),
            Err(Error::BadValue { field: 7, .. })
        ));
        let m = Message::new("0800")
            .and_then(|m| m.with(7, "1128101010"))
            .and_then(|m| m.with(11, "000001"))
            .and_then(|m| m.with(70, "999"))
            .expect("valid fields");
        assert!(matches!(
            NetworkRequest::try_from(m),
            Err(Error::BadValue { field: 70, .. })
        ));
    }

    fn hex_vector(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    }
}

//! payhub-iso8583: ISO 8583:1987 ASCII codec for the bank link profile (issue 3).

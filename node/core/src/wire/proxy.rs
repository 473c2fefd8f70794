//! `/meshproxy/proxy/1`: the client asks an exit to connect somewhere, the
//! exit says how that went, then the stream carries raw bytes both ways.
//!
//! ```text
//! client → exit   ConnectRequest    (one frame, body ≤ MAX_REQUEST = 442)
//! exit → client   ConnectResponse   (one frame, body ≤ MAX_RESPONSE = 21)
//! both ways       raw bytes of the spliced connection, no framing
//! ```
//!
//! Byte layout of the bodies (integers big-endian; see [`super::frame`] for
//! the length prefix in front):
//!
//! ```text
//! ConnectRequest   0x01 | version u8 | target | session | ticket
//!   target         0x01 | IPv4 [4] | port u16
//!                | 0x03 | len u8 (1..=255) | domain [len], UTF-8 | port u16
//!                | 0x04 | IPv6 [16] | port u16
//!   session        0x00                       (none)
//!                | 0x01 | session id u64
//!   ticket         len u8 (0 = none, ..=MAX_TICKET_LEN) | ticket [len]   (crate::ticket)
//! ConnectResponse  0x02 | status u8 (RFC 1928 reply code 0x00..=0x08) | bound
//!   bound          0x00                       (none)
//!                | 0x01 | IPv4 [4] | port u16
//!                | 0x04 | IPv6 [16] | port u16
//! ```
//!
//! Address type codes are SOCKS5's (RFC 1928 `ATYP`), so a client can map a
//! SOCKS request onto the wire without a table. Only the request carries a
//! version: an exit that reads [`DecodeError::UnsupportedVersion`] can still
//! answer with a `ConnectResponse` the client understands, because the response
//! layout is what every version agrees on. An IPv6 address travels without
//! flow info and scope id (they mean nothing on another host) and decodes with
//! both zero.

use super::frame::{
    decode_frame, encode_frame, put_short_bytes, DecodeError, DecodeResult, Invalid, Reader,
    TypeRule,
};
use super::MAX_TICKET_LEN;
use crate::ids::SessionId;
use crate::target::{Status, TargetAddr, MAX_DOMAIN_LEN};
use bytes::Bytes;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// The libp2p protocol name of proxy streams.
pub const PROXY_PROTOCOL: &str = "/meshproxy/proxy/1";
/// The version this node writes into, and accepts in, a `ConnectRequest`.
pub const PROXY_VERSION: u8 = 2;

const TYPE_REQUEST: u8 = 0x01;
const TYPE_RESPONSE: u8 = 0x02;

const ATYP_NONE: u8 = 0x00;
const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;

/// Largest `ConnectRequest` body: type, version, address type, domain length,
/// a 255-byte domain, port, session flag, session id, ticket length, ticket.
pub const MAX_REQUEST: usize = 1 + 1 + 1 + 1 + MAX_DOMAIN_LEN + 2 + 1 + 8 + 1 + MAX_TICKET_LEN;
/// Largest `ConnectResponse` body: type, status, address type, IPv6, port.
pub const MAX_RESPONSE: usize = 1 + 1 + 1 + 16 + 2;

const _: () = assert!(MAX_DOMAIN_LEN <= u8::MAX as usize, "domain length travels in one byte");

/// What a client asks an exit to do: connect to `target`, on behalf of a
/// sticky session if there is one.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ConnectRequest {
    /// The protocol version the client speaks; [`PROXY_VERSION`] unless a test
    /// pretends to be another node.
    pub version: u8,
    /// Where to connect.
    pub target: TargetAddr,
    /// The sticky session this connection belongs to, so the exit can keep
    /// its egress stable.
    pub session: Option<SessionId>,
    /// The client's ticket from a hub (empty: none), which a closed exit
    /// requires; at most [`MAX_TICKET_LEN`] bytes.
    pub ticket: Bytes,
}

impl ConnectRequest {
    /// A request in this node's own protocol version, without a ticket.
    pub fn new(target: TargetAddr, session: Option<SessionId>) -> Self {
        ConnectRequest { version: PROXY_VERSION, target, session, ticket: Bytes::new() }
    }

    /// The same request carrying `ticket`.
    #[must_use]
    pub fn with_ticket(self, ticket: Bytes) -> Self {
        ConnectRequest { ticket, ..self }
    }
}

/// How the exit's connect attempt ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ConnectResponse {
    /// The outcome, as a SOCKS5 reply code.
    pub status: Status,
    /// The local address of the exit's origin connection, if it reports one
    /// (SOCKS5's `BND.ADDR`).
    pub bound: Option<SocketAddr>,
}

/// Appends `req` as one frame.
///
/// A domain outside 1..=255 bytes cannot be encoded; rather than panic or
/// truncate it into another name, the encoder then writes a frame the exit
/// rejects as [`DecodeError::Malformed`].
pub fn encode_request(req: &ConnectRequest, out: &mut Vec<u8>) {
    encode_frame(out, TYPE_REQUEST, MAX_REQUEST, |out| {
        out.push(req.version);
        put_target(out, &req.target)?;
        match req.session {
            None => out.push(0),
            Some(SessionId(id)) => {
                out.push(1);
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
        if req.ticket.is_empty() {
            out.push(0);
            Ok(())
        } else {
            put_short_bytes(out, &req.ticket, 1, MAX_TICKET_LEN, "bad ticket")
        }
    });
}

/// Decodes a `ConnectRequest` from the front of `buf`.
///
/// A request of another protocol version fails with
/// [`DecodeError::UnsupportedVersion`] as soon as its version byte arrives.
pub fn decode_request(buf: &[u8]) -> DecodeResult<ConnectRequest> {
    let rule = |ty| {
        (ty == TYPE_REQUEST)
            .then_some(TypeRule { max_body: MAX_REQUEST, version: Some(PROXY_VERSION) })
    };
    decode_frame(buf, MAX_REQUEST, rule, |_, r| {
        let version = r.u8("truncated version")?;
        let target = read_target(r)?;
        let session = match r.flag("bad session flag")? {
            false => None,
            true => Some(SessionId(r.u64("truncated session id")?)),
        };
        let ticket =
            Bytes::copy_from_slice(r.short_bytes(0, MAX_TICKET_LEN, "bad ticket length")?);
        Ok(ConnectRequest { version, target, session, ticket })
    })
}

/// Appends `resp` as one frame.
pub fn encode_response(resp: &ConnectResponse, out: &mut Vec<u8>) {
    encode_frame(out, TYPE_RESPONSE, MAX_RESPONSE, |out| {
        out.push(resp.status.code());
        match resp.bound {
            None => out.push(ATYP_NONE),
            Some(sa) => put_socket_addr(out, sa),
        }
        Ok(())
    });
}

/// Decodes a `ConnectResponse` from the front of `buf`.
pub fn decode_response(buf: &[u8]) -> DecodeResult<ConnectResponse> {
    let rule =
        |ty| (ty == TYPE_RESPONSE).then_some(TypeRule { max_body: MAX_RESPONSE, version: None });
    decode_frame(buf, MAX_RESPONSE, rule, |_, r| {
        let status = Status::from_code(r.u8("truncated status")?)
            .ok_or(DecodeError::Malformed("unknown status"))?;
        let bound = match r.u8("truncated bound address")? {
            ATYP_NONE => None,
            ATYP_IPV4 => Some(read_ipv4(r)?),
            ATYP_IPV6 => Some(read_ipv6(r)?),
            _ => return Err(DecodeError::Malformed("bad bound address type")),
        };
        Ok(ConnectResponse { status, bound })
    })
}

fn put_socket_addr(out: &mut Vec<u8>, sa: SocketAddr) {
    match sa {
        SocketAddr::V4(v4) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&v4.ip().octets());
        }
        SocketAddr::V6(v6) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&v6.ip().octets());
        }
    }
    out.extend_from_slice(&sa.port().to_be_bytes());
}

fn put_target(out: &mut Vec<u8>, target: &TargetAddr) -> Result<(), Invalid> {
    match target {
        TargetAddr::Ip(sa) => put_socket_addr(out, *sa),
        TargetAddr::Domain(name, port) => {
            out.push(ATYP_DOMAIN);
            put_short_bytes(out, name.as_bytes(), 1, MAX_DOMAIN_LEN, "domain length")?;
            out.extend_from_slice(&port.to_be_bytes());
        }
    }
    Ok(())
}

fn read_ipv4(r: &mut Reader<'_>) -> Result<SocketAddr, DecodeError> {
    let ip = Ipv4Addr::from(r.array::<4>("truncated IPv4 address")?);
    let port = r.u16("truncated port")?;
    Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
}

fn read_ipv6(r: &mut Reader<'_>) -> Result<SocketAddr, DecodeError> {
    let ip = Ipv6Addr::from(r.array::<16>("truncated IPv6 address")?);
    let port = r.u16("truncated port")?;
    Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)))
}

fn read_target(r: &mut Reader<'_>) -> Result<TargetAddr, DecodeError> {
    match r.u8("truncated target")? {
        ATYP_IPV4 => read_ipv4(r).map(TargetAddr::Ip),
        ATYP_IPV6 => read_ipv6(r).map(TargetAddr::Ip),
        ATYP_DOMAIN => {
            let name = r.short_bytes(1, MAX_DOMAIN_LEN, "bad domain length")?;
            let name = core::str::from_utf8(name)
                .map_err(|_| DecodeError::Malformed("domain is not UTF-8"))?;
            let port = r.u16("truncated port")?;
            Ok(TargetAddr::Domain(name.to_owned(), port))
        }
        _ => Err(DecodeError::Malformed("bad target address type")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::Decoded;
    use super::*;
    use proptest::prelude::*;

    fn req_bytes(req: &ConnectRequest) -> Vec<u8> {
        let mut v = Vec::new();
        encode_request(req, &mut v);
        v
    }

    fn resp_bytes(resp: &ConnectResponse) -> Vec<u8> {
        let mut v = Vec::new();
        encode_response(resp, &mut v);
        v
    }

    fn complete<T>(msg: T, consumed: usize) -> DecodeResult<T> {
        Ok(Decoded::Complete { msg, consumed })
    }

    fn domain(name: &str) -> ConnectRequest {
        ConnectRequest::new(TargetAddr::Domain(name.into(), 443), None)
    }

    /// Re-frames `body` with a correct length prefix.
    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn request_layout_is_as_documented() {
        let req = ConnectRequest::new(
            TargetAddr::Ip("10.1.2.3:80".parse().expect("literal")),
            Some(SessionId(0x0102_0304_0506_0708)),
        );
        let bytes = req_bytes(&req);
        assert_eq!(
            bytes,
            [0, 0, 0, 19, 0x01, 2, 0x01, 10, 1, 2, 3, 0, 80, 1, 1, 2, 3, 4, 5, 6, 7, 8, 0]
        );
        assert_eq!(decode_request(&bytes), complete(req, bytes.len()));

        let req = domain("ab");
        let bytes = req_bytes(&req);
        assert_eq!(bytes, [0, 0, 0, 10, 0x01, 2, 0x03, 2, b'a', b'b', 0x01, 0xbb, 0, 0]);
        assert_eq!(decode_request(&bytes), complete(req, bytes.len()));

        let req = domain("a").with_ticket(Bytes::from_static(&[7, 8, 9]));
        let bytes = req_bytes(&req);
        assert_eq!(bytes, [0, 0, 0, 12, 0x01, 2, 0x03, 1, b'a', 0x01, 0xbb, 0, 3, 7, 8, 9]);
        assert_eq!(decode_request(&bytes), complete(req, bytes.len()));

        let req = ConnectRequest::new(TargetAddr::Ip("[::1]:8080".parse().expect("literal")), None);
        let bytes = req_bytes(&req);
        assert_eq!(bytes.len(), 4 + 1 + 1 + 1 + 16 + 2 + 1 + 1);
        assert_eq!(decode_request(&bytes), complete(req, bytes.len()));
    }

    #[test]
    fn response_layout_is_as_documented() {
        let resp = ConnectResponse { status: Status::Succeeded, bound: None };
        let bytes = resp_bytes(&resp);
        assert_eq!(bytes, [0, 0, 0, 3, 0x02, 0x00, 0x00]);
        assert_eq!(decode_response(&bytes), complete(resp, 7));

        let resp = ConnectResponse {
            status: Status::ConnectionRefused,
            bound: Some("192.0.2.1:4000".parse().expect("literal")),
        };
        let bytes = resp_bytes(&resp);
        assert_eq!(bytes, [0, 0, 0, 9, 0x02, 0x05, 0x01, 192, 0, 2, 1, 0x0f, 0xa0]);
        assert_eq!(decode_response(&bytes), complete(resp, bytes.len()));
    }

    #[test]
    fn largest_messages_hit_the_limits_exactly() {
        let mut req = domain(&"a".repeat(MAX_DOMAIN_LEN))
            .with_ticket(Bytes::from(vec![0xee; MAX_TICKET_LEN]));
        req.session = Some(SessionId(u64::MAX));
        let bytes = req_bytes(&req);
        assert_eq!(bytes.len(), 4 + MAX_REQUEST);
        assert_eq!(decode_request(&bytes), complete(req, bytes.len()));

        let resp = ConnectResponse {
            status: Status::TtlExpired,
            bound: Some("[2001:db8::1]:65535".parse().expect("literal")),
        };
        let bytes = resp_bytes(&resp);
        assert_eq!(bytes.len(), 4 + MAX_RESPONSE);
        assert_eq!(decode_response(&bytes), complete(resp, bytes.len()));
    }

    #[test]
    fn one_byte_over_the_limit_is_too_large() {
        let mut bytes = req_bytes(&domain("x"));
        bytes[..4].copy_from_slice(&(MAX_REQUEST as u32 + 1).to_be_bytes());
        assert_eq!(
            decode_request(&bytes[..4]),
            Err(DecodeError::TooLarge { len: MAX_REQUEST + 1, max: MAX_REQUEST })
        );
        let bytes = (MAX_RESPONSE as u32 + 1).to_be_bytes();
        assert_eq!(
            decode_response(&bytes),
            Err(DecodeError::TooLarge { len: MAX_RESPONSE + 1, max: MAX_RESPONSE })
        );
    }

    #[test]
    fn huge_declared_length_fails_after_four_bytes() {
        assert_eq!(
            decode_request(&[0xff; 4]),
            Err(DecodeError::TooLarge { len: u32::MAX as usize, max: MAX_REQUEST })
        );
        assert_eq!(
            decode_response(&[0xff; 4]),
            Err(DecodeError::TooLarge { len: u32::MAX as usize, max: MAX_RESPONSE })
        );
    }

    #[test]
    fn domain_length_limits() {
        let long = ConnectRequest::new(TargetAddr::Domain("a".repeat(256), 1), None);
        let empty = domain("");
        for bad in [long, empty] {
            let bytes = req_bytes(&bad);
            assert_eq!(bytes, [0, 0, 0, 1, TYPE_REQUEST], "unencodable input poisons the frame");
            assert_eq!(decode_request(&bytes), Err(DecodeError::Malformed("missing version")));
        }
        // A zero-length domain on the wire.
        let bytes = frame(&[TYPE_REQUEST, PROXY_VERSION, ATYP_DOMAIN, 0, 0, 80, 0, 0]);
        assert_eq!(decode_request(&bytes), Err(DecodeError::Malformed("bad domain length")));
    }

    #[test]
    fn domain_must_be_utf8() {
        let bytes = frame(&[TYPE_REQUEST, PROXY_VERSION, ATYP_DOMAIN, 2, 0xc3, 0x28, 0, 80, 0, 0]);
        assert_eq!(decode_request(&bytes), Err(DecodeError::Malformed("domain is not UTF-8")));
        let req = domain("bücher.example");
        let bytes = req_bytes(&req);
        assert_eq!(decode_request(&bytes), complete(req, bytes.len()));
    }

    #[test]
    fn other_versions_are_reported_as_soon_as_the_version_byte_arrives() {
        for v in [0, 1, 3, 0xff] {
            let mut req = domain("example.com");
            req.version = v;
            let bytes = req_bytes(&req);
            assert_eq!(decode_request(&bytes[..6]), Err(DecodeError::UnsupportedVersion(v)));
            assert_eq!(decode_request(&bytes), Err(DecodeError::UnsupportedVersion(v)));
        }
        // A long later-version request gets the version answer at its version byte.
        let mut big = vec![0, 0, 1, 0, TYPE_REQUEST, 3];
        big.resize(4 + 256, 0);
        assert_eq!(decode_request(&big), Err(DecodeError::UnsupportedVersion(3)));
    }

    #[test]
    fn unknown_types_statuses_and_address_types() {
        assert_eq!(
            decode_request(&frame(&[TYPE_RESPONSE, 0, 0])),
            Err(DecodeError::UnknownType(2))
        );
        assert_eq!(decode_response(&frame(&[TYPE_REQUEST, 1])), Err(DecodeError::UnknownType(1)));
        assert_eq!(
            decode_response(&frame(&[TYPE_RESPONSE, 0x09, 0])),
            Err(DecodeError::Malformed("unknown status"))
        );
        assert_eq!(
            decode_response(&frame(&[TYPE_RESPONSE, 0x00, ATYP_DOMAIN])),
            Err(DecodeError::Malformed("bad bound address type"))
        );
        assert_eq!(
            decode_request(&frame(&[TYPE_REQUEST, PROXY_VERSION, 0x02, 0, 0])),
            Err(DecodeError::Malformed("bad target address type"))
        );
        assert_eq!(
            decode_request(&frame(&[
                TYPE_REQUEST,
                PROXY_VERSION,
                ATYP_IPV4,
                1,
                2,
                3,
                4,
                0,
                80,
                2,
                0
            ])),
            Err(DecodeError::Malformed("bad session flag"))
        );
    }

    #[test]
    fn ticket_field_limits() {
        let head = [TYPE_REQUEST, PROXY_VERSION, ATYP_IPV4, 1, 2, 3, 4, 0, 80, 0];
        // No ticket byte at all: a version-1 layout under the version-2 byte.
        assert_eq!(decode_request(&frame(&head)), Err(DecodeError::Malformed("bad ticket length")));
        // A ticket longer than any ticket.
        let mut long = head.to_vec();
        long.push(MAX_TICKET_LEN as u8 + 1);
        long.resize(long.len() + MAX_TICKET_LEN + 1, 0xaa);
        assert!(matches!(decode_request(&frame(&long)), Err(DecodeError::Malformed(_))));
        // A ticket shorter than its length says.
        let mut short = head.to_vec();
        short.extend_from_slice(&[3, 1, 2]);
        assert!(matches!(decode_request(&frame(&short)), Err(DecodeError::Malformed(_))));
        // Exactly the longest ticket decodes.
        let mut max = head.to_vec();
        max.push(MAX_TICKET_LEN as u8);
        max.resize(max.len() + MAX_TICKET_LEN, 0xaa);
        let Ok(Decoded::Complete { msg, .. }) = decode_request(&frame(&max)) else {
            panic!("the longest ticket is refused")
        };
        assert_eq!(msg.ticket.len(), MAX_TICKET_LEN);
    }

    #[test]
    fn every_status_round_trips() {
        for code in 0..=0x08 {
            let status = Status::from_code(code).expect("RFC 1928 code");
            let resp = ConnectResponse { status, bound: None };
            assert_eq!(decode_response(&resp_bytes(&resp)), complete(resp, 7));
        }
    }

    #[test]
    fn trailing_bytes_and_short_fields_inside_the_body() {
        let mut body = vec![TYPE_RESPONSE, 0, 0, 0xaa];
        assert_eq!(decode_response(&frame(&body)), Err(DecodeError::TrailingBytes { extra: 1 }));
        body.truncate(2);
        assert_eq!(
            decode_response(&frame(&body)),
            Err(DecodeError::Malformed("truncated bound address"))
        );
        assert_eq!(
            decode_request(&frame(&[TYPE_REQUEST, PROXY_VERSION, ATYP_IPV6, 0, 0])),
            Err(DecodeError::Malformed("truncated IPv6 address"))
        );
    }

    #[test]
    fn ipv6_scope_is_not_carried() {
        let sa = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 1, 7, 9));
        let bytes = req_bytes(&ConnectRequest::new(TargetAddr::Ip(sa), None));
        let expect = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 1, 0, 0));
        assert_eq!(
            decode_request(&bytes),
            complete(ConnectRequest::new(TargetAddr::Ip(expect), None), bytes.len())
        );
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let mut req = domain(&"z".repeat(MAX_DOMAIN_LEN));
        req.session = Some(SessionId(3));
        let bytes = req_bytes(&req);
        for cut in 0..bytes.len() {
            assert_eq!(decode_request(&bytes[..cut]), Ok(Decoded::Incomplete), "cut {cut}");
        }
        let bytes = resp_bytes(&ConnectResponse {
            status: Status::Succeeded,
            bound: Some("[::2]:9".parse().expect("literal")),
        });
        for cut in 0..bytes.len() {
            assert_eq!(decode_response(&bytes[..cut]), Ok(Decoded::Incomplete), "cut {cut}");
        }
    }

    pub(crate) fn socket_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::V4(SocketAddrV4::new(ip.into(), port))),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::V6(SocketAddrV6::new(ip.into(), port, 0, 0))),
        ]
    }

    fn target() -> impl Strategy<Value = TargetAddr> {
        prop_oneof![
            socket_addr().prop_map(TargetAddr::Ip),
            // Any UTF-8 (multi-byte included), cut to the byte limit on a
            // char boundary.
            (".{1,255}", any::<u16>()).prop_map(|(mut name, port): (String, u16)| {
                while name.len() > MAX_DOMAIN_LEN {
                    name.pop();
                }
                TargetAddr::Domain(name, port)
            }),
        ]
    }

    fn request() -> impl Strategy<Value = ConnectRequest> {
        (
            target(),
            proptest::option::of(any::<u64>().prop_map(SessionId)),
            proptest::collection::vec(any::<u8>(), 0..=MAX_TICKET_LEN),
        )
            .prop_map(|(target, session, ticket)| {
                ConnectRequest::new(target, session).with_ticket(Bytes::from(ticket))
            })
    }

    fn response() -> impl Strategy<Value = ConnectResponse> {
        (0u8..=8, proptest::option::of(socket_addr())).prop_map(|(code, bound)| ConnectResponse {
            status: Status::from_code(code).unwrap_or(Status::GeneralFailure),
            bound,
        })
    }

    proptest! {
        #[test]
        fn requests_round_trip(req in request(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut bytes = req_bytes(&req);
            let len = bytes.len();
            prop_assert!(len <= 4 + MAX_REQUEST);
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(decode_request(&bytes), complete(req, len));
            for cut in 0..len {
                prop_assert_eq!(decode_request(&bytes[..cut]), Ok(Decoded::Incomplete));
            }
        }

        #[test]
        fn responses_round_trip(resp in response()) {
            let bytes = resp_bytes(&resp);
            prop_assert!(bytes.len() <= 4 + MAX_RESPONSE);
            prop_assert_eq!(decode_response(&bytes), complete(resp, bytes.len()));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Decoded::Complete { consumed, msg }) = decode_request(&bytes) {
                prop_assert!(consumed <= bytes.len());
                // Whatever decodes re-encodes to exactly the bytes it came from.
                prop_assert_eq!(&req_bytes(&msg)[..], &bytes[..consumed]);
            }
            if let Ok(Decoded::Complete { consumed, msg }) = decode_response(&bytes) {
                prop_assert!(consumed <= bytes.len());
                prop_assert_eq!(&resp_bytes(&msg)[..], &bytes[..consumed]);
            }
        }

        #[test]
        fn plausible_frames_decode_canonically(
            ty in 1u8..=2,
            fields in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            // Valid prefix and type, random fields: reaches the field parsers.
            let mut body = vec![ty, PROXY_VERSION];
            body.extend_from_slice(&fields);
            let bytes = frame(&body);
            if let Ok(Decoded::Complete { consumed, msg }) = decode_request(&bytes) {
                prop_assert_eq!(consumed, bytes.len());
                prop_assert_eq!(req_bytes(&msg), bytes.clone());
            }
            if let Ok(Decoded::Complete { consumed, msg }) = decode_response(&bytes) {
                prop_assert_eq!(consumed, bytes.len());
                prop_assert_eq!(resp_bytes(&msg), bytes);
            }
        }

        #[test]
        fn concatenated_requests_decode_in_turn(reqs in proptest::collection::vec(request(), 1..5)) {
            let mut stream = Vec::new();
            for req in &reqs {
                encode_request(req, &mut stream);
            }
            let mut rest = &stream[..];
            for req in reqs {
                match decode_request(rest) {
                    Ok(Decoded::Complete { msg, consumed }) => {
                        prop_assert_eq!(msg, req);
                        rest = &rest[consumed..];
                    }
                    other => prop_assert!(false, "expected a request, got {:?}", other),
                }
            }
            prop_assert!(rest.is_empty());
        }
    }
}

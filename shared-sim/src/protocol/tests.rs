//! Wire-format round trips, the documented bytes, limits and which message fits which session.

use super::*;
use crate::rules::Target;

#[test]
fn each_client_message_is_legal_on_one_kind_of_session_only() {
    let messages = [
        (
            ClientMessage::MatchAction {
                seq: 1,
                action: Action::EndTurn,
            },
            TokenKind::Instance,
        ),
        (ClientMessage::RequestSnapshot, TokenKind::Instance),
        (
            ClientMessage::FarmAction {
                seq: 1,
                action: crate::farm::FarmAction::Water { plot: 0 },
            },
            TokenKind::Farm,
        ),
        (ClientMessage::HubMove { x: 1, y: 2 }, TokenKind::Hub),
        (ClientMessage::HubChat { text: "hi".into() }, TokenKind::Hub),
    ];
    let kinds = [
        TokenKind::Connection,
        TokenKind::Instance,
        TokenKind::Farm,
        TokenKind::Hub,
    ];
    for (message, legal) in &messages {
        for kind in kinds {
            assert_eq!(
                message.verify(kind),
                kind == *legal,
                "{message:?} on {kind:?}"
            );
        }
    }
}

#[test]
fn round_trip_and_documented_bytes() {
    let m = ClientMessage::MatchAction {
        seq: 300,
        action: Action::Attack {
            attacker: 5,
            target: Target::Hero(Seat::Second),
        },
    };
    let bytes = m.encode();
    // variant 0, seq 300 as LEB128 (0xAC 0x02), Attack = variant 1, attacker 5,
    // Target::Hero = variant 0, Seat::Second = variant 1. Mirrors docs/PROTOCOL.md.
    assert_eq!(bytes, vec![0x00, 0xAC, 0x02, 0x01, 0x05, 0x00, 0x01]);
    assert_eq!(ClientMessage::decode(&bytes).unwrap(), m);
    let play = ClientMessage::MatchAction {
        seq: 1,
        action: Action::PlayCard {
            card: "ab".into(),
            target: None,
        },
    };
    assert_eq!(play.encode(), vec![0, 1, 0, 2, b'a', b'b', 0]);
    assert_eq!(ClientMessage::RequestSnapshot.encode(), vec![1]);
}

#[test]
fn garbage_never_panics_and_is_typed() {
    assert!(matches!(
        ClientMessage::decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        ClientMessage::decode(&[]),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        ClientMessage::decode(&[0, 1]),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        ClientMessage::decode(&[1, 0]),
        Err(DecodeError::TrailingBytes(1))
    ));
    let big = vec![0u8; MAX_CLIENT_MESSAGE_BYTES + 1];
    assert_eq!(
        ClientMessage::decode(&big).unwrap_err().code(),
        ErrorCode::TooLarge
    );
    // A string length far past the end of the buffer.
    assert!(ClientMessage::decode(&[0, 1, 0, 0xff, 0xff, 0x03, b'a']).is_err());
}

#[test]
fn user_data_round_trip_and_rejects() {
    let d = TokenUserData {
        kind: TokenKind::Instance,
        user_id: 42,
        match_id: 7,
        session_id: [9; 16],
    };
    let bytes = d.to_bytes();
    assert_eq!(TokenUserData::from_bytes(&bytes).unwrap(), d);
    let mut bad = bytes;
    bad[1] = 9;
    assert_eq!(TokenUserData::from_bytes(&bad), Err(UserDataError::Kind(9)));
    let zero = [0u8; USER_DATA_BYTES];
    assert_eq!(
        TokenUserData::from_bytes(&zero),
        Err(UserDataError::Format(0))
    );
}

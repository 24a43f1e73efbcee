//! The lobby's rules driven through [`LobbyPlugin`] in an `App` with manual time and no
//! sockets: the test plays the transport (arrivals and inbox in, outbox out) and the async side
//! (jobs out, replies in).

use std::time::Duration;

use bevy::prelude::*;
use bevy::time::TimeUpdateStrategy;
use shared_sim::protocol::{
    ChatTarget, ErrorCode, LobbyClientMessage, LobbyServerMessage, Presence, TokenKind,
    TokenUserData,
};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::*;

const FRAME: Duration = Duration::from_millis(100);

struct Harness {
    app: App,
    jobs: UnboundedReceiver<Job>,
    replies: UnboundedSender<Reply>,
}

fn limits() -> Limits {
    Limits {
        chat_per_10s: 3,
        max_messages_per_second: 20,
        bad_message_budget: 2,
        idle_flush_frames: 5,
    }
}

fn token(user: UserId, kind: TokenKind, session: u8) -> Box<[u8; USER_DATA_BYTES]> {
    Box::new(
        TokenUserData {
            kind,
            user_id: user,
            match_id: 0,
            session_id: [session; 16],
        }
        .to_bytes(),
    )
}

fn friend(user: UserId, name: &str) -> store::Friend {
    store::Friend {
        user_id: user as i64,
        username: name.into(),
        state: store::FriendState::Accepted,
    }
}

impl Harness {
    fn new(limits: Limits) -> Self {
        let (job_tx, jobs) = unbounded_channel();
        let (replies, reply_rx) = unbounded_channel();
        let lobby = Lobby::new(job_tx, reply_rx, limits, Default::default());
        let mut app = App::new();
        app.add_plugins((TaskPoolPlugin::default(), bevy::time::TimePlugin))
            .insert_resource(TimeUpdateStrategy::ManualDuration(FRAME))
            .insert_resource(lobby)
            .add_plugins(LobbyPlugin);
        Self { app, jobs, replies }
    }

    fn lobby(&mut self) -> Mut<'_, Lobby> {
        self.app.world_mut().resource_mut::<Lobby>()
    }

    fn frame(&mut self) {
        self.app.update();
    }

    /// Lets `d` of time pass, one frame at a time.
    fn wait(&mut self, d: Duration) {
        for _ in 0..d.as_millis().div_ceil(FRAME.as_millis()) {
            self.frame();
        }
    }

    fn jobs(&mut self) -> Vec<Job> {
        std::iter::from_fn(|| self.jobs.try_recv().ok()).collect()
    }

    fn reply(&mut self, reply: Reply) {
        self.replies.send(reply).unwrap();
        self.frame();
    }

    fn connect_as(&mut self, user: UserId, shard: usize, data: Box<[u8; USER_DATA_BYTES]>) {
        self.lobby().arrivals.push(NetEvent::Connected {
            shard,
            client: user,
            user_data: Some(data),
        });
        self.frame();
    }

    /// Connects and loads a player with these accepted friends; returns what they were sent.
    fn login(&mut self, user: UserId, name: &str, friends: &[(UserId, &str)]) {
        self.connect_as(user, 0, token(user, TokenKind::Connection, user as u8));
        let jobs = self.jobs();
        assert!(
            matches!(jobs.as_slice(), [Job::Load { user: u, .. }] if *u == user),
            "{jobs:?}"
        );
        self.reply(Reply::Loaded {
            user,
            username: name.into(),
            friends: friends.iter().map(|(id, n)| friend(*id, n)).collect(),
        });
    }

    fn disconnect(&mut self, user: UserId) {
        self.lobby().arrivals.push(NetEvent::Disconnected {
            shard: 0,
            client: user,
            reason: "gone".into(),
        });
        self.frame();
    }

    fn say(&mut self, user: UserId, msg: LobbyClientMessage) {
        self.say_bytes(user, msg.encode());
    }

    fn say_bytes(&mut self, user: UserId, bytes: Vec<u8>) {
        self.lobby().inbox.push((user, bytes.into()));
        self.frame();
    }

    /// What the lobby handed the transport since the last call: messages decoded, and
    /// disconnections as `None`.
    fn sent(&mut self) -> Vec<(UserId, Option<LobbyServerMessage>)> {
        self.lobby()
            .outbox
            .drain(..)
            .map(|o| match o {
                Outgoing::Message { client, bytes, .. } => {
                    (client, Some(LobbyServerMessage::decode(&bytes).unwrap()))
                }
                Outgoing::Disconnect { client, .. } => (client, None),
            })
            .collect()
    }

    fn sent_to(&mut self, user: UserId) -> Vec<LobbyServerMessage> {
        self.sent()
            .into_iter()
            .filter(|(u, _)| *u == user)
            .filter_map(|(_, m)| m)
            .collect()
    }
}

fn presence_seen(sent: &[LobbyServerMessage], of: UserId) -> Vec<Presence> {
    sent.iter()
        .filter_map(|m| match m {
            LobbyServerMessage::FriendPresence { user_id, presence } if *user_id == of => {
                Some(*presence)
            }
            _ => None,
        })
        .collect()
}

fn errors(sent: &[LobbyServerMessage]) -> Vec<ErrorCode> {
    sent.iter()
        .filter_map(|m| match m {
            LobbyServerMessage::Error { code, .. } => Some(*code),
            _ => None,
        })
        .collect()
}

#[test]
fn friends_see_each_other_come_online_queue_and_leave() {
    let mut h = Harness::new(limits());
    h.login(1, "ann", &[(2, "bob")]);
    let ann = h.sent_to(1);
    assert!(matches!(
        ann[0],
        LobbyServerMessage::Welcome { user_id: 1, .. }
    ));
    let LobbyServerMessage::Friends(list) = &ann[1] else {
        panic!("{ann:?}");
    };
    assert_eq!(list[0].presence, Presence::Offline, "bob is not online yet");

    h.login(2, "bob", &[(1, "ann")]);
    let sent = h.sent_to(1);
    assert_eq!(presence_seen(&sent, 2), [Presence::Online]);

    // Bob queues: matchmaking took the ticket, and Ann sees him in the queue.
    h.say(2, LobbyClientMessage::FindMatch);
    assert!(matches!(
        h.jobs().as_slice(),
        [Job::FindMatch { user: 2, .. }]
    ));
    h.reply(Reply::Queued { user: 2 });
    assert_eq!(presence_seen(&h.sent_to(1), 2), [Presence::InQueue]);

    h.disconnect(2);
    assert_eq!(presence_seen(&h.sent_to(1), 2), [Presence::Offline]);
    assert!(
        h.jobs().iter().any(|j| matches!(
            j,
            Job::CancelMatch {
                user: 2,
                quiet: true
            }
        )),
        "a queued player who leaves withdraws the ticket"
    );
    assert!(!h.lobby().sessions.contains_key(&2));
}

#[test]
fn presence_reaches_only_accepted_friends_and_follows_friendship_changes() {
    let mut h = Harness::new(limits());
    h.login(1, "ann", &[]);
    h.login(2, "bob", &[]);
    h.sent();
    h.reply(Reply::Queued { user: 2 });
    assert!(
        presence_seen(&h.sent_to(1), 2).is_empty(),
        "not friends: Ann hears nothing"
    );

    h.reply(Reply::FriendAccepted { users: [1, 2] });
    let sent = h.sent();
    for (me, them, state) in [(1, 2, Presence::InQueue), (2, 1, Presence::Online)] {
        let mine: Vec<_> = sent
            .iter()
            .filter(|(u, _)| *u == me)
            .filter_map(|(_, m)| m.clone())
            .collect();
        assert!(mine.contains(&LobbyServerMessage::FriendUpdate {
            user_id: them,
            accepted: true
        }));
        assert_eq!(presence_seen(&mine, them), [state], "user {me}");
    }

    h.reply(Reply::FriendRemoved { users: [1, 2] });
    assert!(h.sent_to(1).contains(&LobbyServerMessage::FriendUpdate {
        user_id: 2,
        accepted: false
    }));
    h.reply(Reply::Cancelled { user: 2 });
    assert!(
        presence_seen(&h.sent_to(1), 2).is_empty(),
        "no longer friends: Ann hears nothing"
    );
}

#[test]
fn friend_requests_with_no_name_never_reach_the_database() {
    let mut h = Harness::new(limits());
    h.login(1, "ann", &[]);
    h.sent();
    h.say(
        1,
        LobbyClientMessage::FriendRequest {
            username: "   ".into(),
        },
    );
    assert_eq!(errors(&h.sent_to(1)), [ErrorCode::UnknownUser]);
    assert!(h.jobs().is_empty());
    h.say(
        1,
        LobbyClientMessage::FriendRequest {
            username: "bob".into(),
        },
    );
    assert!(matches!(
        h.jobs().as_slice(),
        [Job::FriendRequest { user: 1, username }] if username == "bob"
    ));
}

#[test]
fn presence_from_another_server_reaches_local_followers() {
    let mut h = Harness::new(limits());
    h.login(1, "ann", &[(7, "zed")]);
    h.sent();
    let env = |presence: &str, producer: &str| {
        events::Event::PresenceChanged {
            user_id: 7,
            presence: presence.into(),
        }
        .envelope(producer)
    };
    h.reply(Reply::Bus(env("online", "connection:b")));
    assert_eq!(presence_seen(&h.sent_to(1), 7), [Presence::Online]);
    // Only the server that reported Zed online may take him offline.
    h.reply(Reply::Bus(env("offline", "connection:c")));
    assert!(presence_seen(&h.sent_to(1), 7).is_empty());
    h.reply(Reply::Bus(env("offline", "connection:b")));
    assert_eq!(presence_seen(&h.sent_to(1), 7), [Presence::Offline]);
}

fn alive(producer: &str, boot: u64) -> Reply {
    Reply::Bus(
        events::Event::ConnectionAlive {
            server: producer.trim_start_matches("connection:").into(),
            boot,
            online: 1,
        }
        .envelope(producer),
    )
}

fn zed_online_on(producer: &str) -> Reply {
    Reply::Bus(
        events::Event::PresenceChanged {
            user_id: 7,
            presence: "online".into(),
        }
        .envelope(producer),
    )
}

#[test]
fn players_of_a_silent_server_go_offline_and_come_back_after_a_partition() {
    let mut h = Harness::new(limits());
    h.login(1, "ann", &[(7, "zed")]);
    h.sent();
    h.reply(alive("connection:b", 11));
    h.reply(zed_online_on("connection:b"));
    assert_eq!(presence_seen(&h.sent_to(1), 7), [Presence::Online]);
    // Heartbeats keep zed online.
    for _ in 0..3 {
        h.wait(super::presence::BEAT);
        h.reply(alive("connection:b", 11));
    }
    assert!(presence_seen(&h.sent_to(1), 7).is_empty());
    // Server b falls silent: within 10 s ann sees zed offline.
    h.wait(Duration::from_secs(9));
    assert_eq!(presence_seen(&h.sent_to(1), 7), [Presence::Offline]);
    assert_eq!(h.lobby().presence_of(7), Presence::Offline);
    // The same process is heard from again (a partition healed): zed is back.
    h.reply(alive("connection:b", 11));
    assert_eq!(presence_seen(&h.sent_to(1), 7), [Presence::Online]);
}

#[test]
fn a_restarted_server_s_old_players_are_offline_at_once() {
    let mut h = Harness::new(limits());
    h.login(1, "ann", &[(7, "zed")]);
    h.sent();
    h.reply(alive("connection:b", 11));
    h.reply(zed_online_on("connection:b"));
    assert_eq!(presence_seen(&h.sent_to(1), 7), [Presence::Online]);
    // b restarted under the same name: the players it had are gone.
    h.reply(alive("connection:b", 12));
    assert_eq!(presence_seen(&h.sent_to(1), 7), [Presence::Offline]);
    // After a silence, a new process does not bring back the old one's players.
    h.reply(zed_online_on("connection:b"));
    h.sent();
    h.wait(Duration::from_secs(9));
    assert_eq!(presence_seen(&h.sent_to(1), 7), [Presence::Offline]);
    h.reply(alive("connection:b", 13));
    assert!(presence_seen(&h.sent_to(1), 7).is_empty());
    assert_eq!(h.lobby().presence_of(7), Presence::Offline);
}

fn friend_changed(change: &str, from: UserId, to: UserId) -> Reply {
    Reply::Bus(
        events::Event::FriendChanged {
            change: change.into(),
            from_user_id: from,
            from_name: "zed".into(),
            to_user_id: to,
        }
        .envelope("connection:b"),
    )
}

#[test]
fn friend_changes_made_on_another_server_reach_the_player_here_at_once() {
    let mut h = Harness::new(limits());
    h.login(1, "ann", &[]);
    h.sent();
    h.jobs();
    h.reply(zed_online_on("connection:b"));
    // Zed (on server b) asks ann: she hears it now, and her list reloads.
    h.reply(friend_changed("requested", 7, 1));
    assert_eq!(
        h.sent_to(1),
        [LobbyServerMessage::FriendRequestReceived {
            user_id: 7,
            username: "zed".into()
        }]
    );
    assert!(matches!(h.jobs().as_slice(), [Job::Friends { user: 1 }]));
    // Zed accepts ann's request: she sees the new friend and his presence.
    h.reply(friend_changed("accepted", 7, 1));
    let sent = h.sent_to(1);
    assert!(
        sent.contains(&LobbyServerMessage::FriendUpdate {
            user_id: 7,
            accepted: true
        }),
        "{sent:?}"
    );
    assert_eq!(presence_seen(&sent, 7), [Presence::Online]);
    assert!(h.lobby().sessions[&1].friends.contains(&7));
    // And removes her.
    h.reply(friend_changed("removed", 7, 1));
    assert!(h.sent_to(1).contains(&LobbyServerMessage::FriendUpdate {
        user_id: 7,
        accepted: false
    }));
    assert!(!h.lobby().sessions[&1].friends.contains(&7));
    // Changes between players who are not here change nothing here.
    h.jobs();
    h.reply(friend_changed("accepted", 7, 8));
    assert!(h.sent_to(1).is_empty());
    assert!(h.jobs().is_empty());
}

#[test]
fn direct_chat_reaches_friends_and_opponents_only() {
    let mut h = Harness::new(limits());
    h.login(1, "ann", &[]);
    h.login(2, "bob", &[]);
    h.sent();
    let hi = LobbyClientMessage::Chat {
        to: ChatTarget::User(2),
        text: "hi".into(),
    };
    // A stranger online gets the same answer as nobody: no presence oracle, no cold messages.
    let refused = |user: UserId| {
        vec![LobbyServerMessage::Error {
            code: ErrorCode::UnknownUser,
            message: format!("user {user} is not online or not your friend"),
        }]
    };
    h.say(1, hi.clone());
    assert_eq!(h.sent_to(1), refused(2));
    h.say(
        1,
        LobbyClientMessage::Chat {
            to: ChatTarget::User(99),
            text: "hi".into(),
        },
    );
    assert_eq!(h.sent_to(1), refused(99));
    assert!(h.sent_to(2).is_empty());
    // Opponents in the same match may talk.
    for user in [1, 2] {
        h.lobby().sessions.get_mut(&user).unwrap().match_id = Some(5);
    }
    h.say(1, hi.clone());
    assert!(matches!(
        h.sent_to(2).as_slice(),
        [LobbyServerMessage::Chat { from: 1, .. }]
    ));
    // And friends, wherever they are.
    for user in [1, 2] {
        h.lobby().sessions.get_mut(&user).unwrap().match_id = None;
    }
    h.lobby().sessions.get_mut(&1).unwrap().friends.insert(2);
    h.wait(Duration::from_secs(10)); // past the chat limit of 3 per 10 s
    h.say(1, hi);
    assert!(matches!(
        h.sent_to(2).as_slice(),
        [LobbyServerMessage::Chat { from: 1, .. }]
    ));
}

#[test]
fn chat_is_limited_per_ten_seconds_of_game_time() {
    let mut h = Harness::new(limits());
    h.login(1, "ann", &[(2, "bob")]);
    h.login(2, "bob", &[(1, "ann")]);
    h.sent();
    let chat = |text: &str| LobbyClientMessage::Chat {
        to: ChatTarget::User(2),
        text: text.into(),
    };
    for i in 0..3 {
        h.say(1, chat(&format!("hi {i}")));
    }
    let bob = h.sent_to(2);
    assert_eq!(bob.len(), 3, "{bob:?}");
    h.say(1, chat("one too many"));
    let sent = h.sent();
    assert_eq!(
        sent,
        [(
            1,
            Some(LobbyServerMessage::Error {
                code: ErrorCode::RateLimited,
                message: "at most 3 chat messages per 10 seconds".into()
            })
        )]
    );
    // Time passes (manual time: no sleeping), and the window reopens.
    h.wait(Duration::from_secs(10));
    h.say(1, chat("again"));
    assert!(matches!(
        h.sent_to(2).as_slice(),
        [LobbyServerMessage::Chat { from: 1, text, .. }] if text == "again"
    ));
}

#[test]
fn chat_to_someone_offline_or_with_control_codes_is_refused() {
    let mut h = Harness::new(limits());
    h.login(1, "ann", &[]);
    h.sent();
    h.say(
        1,
        LobbyClientMessage::Chat {
            to: ChatTarget::User(9),
            text: "anyone?".into(),
        },
    );
    h.say(
        1,
        LobbyClientMessage::Chat {
            to: ChatTarget::Common,
            text: "bell\u{7}".into(),
        },
    );
    assert_eq!(
        errors(&h.sent_to(1)),
        [ErrorCode::UnknownUser, ErrorCode::BadChat]
    );
}

#[test]
fn bad_messages_past_the_budget_disconnect_only_their_sender() {
    let mut h = Harness::new(limits());
    h.login(1, "ann", &[(2, "bob")]);
    h.login(2, "bob", &[(1, "ann")]);
    h.sent();
    for _ in 0..2 {
        h.say_bytes(1, vec![0xff, 0xff, 0xff]);
    }
    assert_eq!(errors(&h.sent_to(1)).len(), 2);
    h.say_bytes(1, vec![0xff]);
    let sent = h.sent();
    assert!(sent.contains(&(1, None)), "disconnected: {sent:?}");
    assert!(sent.contains(&(
        1,
        Some(LobbyServerMessage::Error {
            code: ErrorCode::TooManyErrors,
            message: "too many bad messages".into()
        })
    )));
    let bob: Vec<_> = sent
        .iter()
        .filter(|(u, _)| *u == 2)
        .filter_map(|(_, m)| m.clone())
        .collect();
    assert_eq!(presence_seen(&bob, 1), [Presence::Offline]);
    assert!(h.lobby().sessions.contains_key(&2));
}

#[test]
fn admission_refuses_wrong_and_revoked_tokens_and_a_newer_login_replaces_the_old() {
    let mut h = Harness::new(limits());
    h.connect_as(1, 0, token(1, TokenKind::Instance, 1));
    h.connect_as(2, 0, token(3, TokenKind::Connection, 2));
    let sent = h.sent();
    assert_eq!(
        sent.iter().filter(|(_, m)| m.is_none()).count(),
        2,
        "{sent:?}"
    );
    assert!(h.jobs().is_empty());

    h.reply(Reply::Revoked(vec![[5; 16]]));
    h.connect_as(5, 0, token(5, TokenKind::Connection, 5));
    assert!(matches!(
        h.sent_to(5).as_slice(),
        [LobbyServerMessage::Error {
            code: ErrorCode::SessionRevoked,
            ..
        }]
    ));

    h.login(4, "dee", &[]);
    h.sent();
    h.connect_as(4, 1, token(4, TokenKind::Connection, 44));
    let sent = h.sent();
    assert!(
        matches!(
            sent.as_slice(),
            [
                (
                    4,
                    Some(LobbyServerMessage::Error {
                        code: ErrorCode::Replaced,
                        ..
                    })
                ),
                (4, None)
            ]
        ),
        "{sent:?}"
    );
    assert_eq!(h.lobby().sessions[&4].shard, 1);
}

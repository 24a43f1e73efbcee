//! The development flow until matchmaking exists: create a match on an instance server through
//! its control API and mint the players' connect tokens with the shared netcode key.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use contracts::instance::v1::{CreateMatchRequest, CreateMatchResponse, MATCHES};
use renet_netcode::ConnectToken;
use token::ConnectTokenIssuer;

use crate::TokenSource;

/// Creates matches on one instance server and mints tokens for them.
pub struct DevMatchmaker {
    pub control_url: String,
    control_token: String,
    pub issuer: ConnectTokenIssuer,
    http: reqwest::blocking::Client,
    next_match: AtomicU64,
    /// The UDP address of each match, for minting reconnect tokens.
    addrs: std::sync::Mutex<std::collections::HashMap<u64, SocketAddr>>,
}

impl DevMatchmaker {
    pub fn new(
        control_url: String,
        control_token: String,
        issuer: ConnectTokenIssuer,
        first_match_id: u64,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            control_url,
            control_token,
            issuer,
            http: reqwest::blocking::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()?,
            next_match: AtomicU64::new(first_match_id),
            addrs: Default::default(),
        })
    }

    /// Creates a match for two users with starter decks; returns its id and both tokens.
    pub fn create_match(
        &self,
        players: [u64; 2],
        decks: [&str; 2],
    ) -> anyhow::Result<(u64, [ConnectToken; 2])> {
        let match_id = self.next_match.fetch_add(1, Ordering::Relaxed);
        let resp = self
            .http
            .post(format!("{}{MATCHES}", self.control_url))
            .bearer_auth(&self.control_token)
            .json(&CreateMatchRequest {
                match_id,
                players,
                decks: None,
                starter_decks: Some(decks.map(str::to_string)),
                seed: None,
            })
            .send()
            .context("calling the instance control API")?;
        let status = resp.status();
        if !status.is_success() {
            bail!(
                "instance refused the match: {status}: {}",
                resp.text().unwrap_or_default()
            );
        }
        let created: CreateMatchResponse =
            resp.json().context("reading the create-match answer")?;
        if let Ok(mut addrs) = self.addrs.lock() {
            addrs.insert(match_id, created.server_addr);
        }
        let t0 = self
            .issuer
            .mint_instance(created.server_addr, players[0], match_id)?;
        let t1 = self
            .issuer
            .mint_instance(created.server_addr, players[1], match_id)?;
        Ok((match_id, [t0, t1]))
    }
}

impl TokenSource for DevMatchmaker {
    fn instance_token(&self, user_id: u64, match_id: u64) -> anyhow::Result<ConnectToken> {
        let addr = self
            .addrs
            .lock()
            .ok()
            .and_then(|a| a.get(&match_id).copied())
            .context("unknown match")?;
        Ok(self.issuer.mint_instance(addr, user_id, match_id)?)
    }
}

/// Creates `matches` matches for consecutive user ids from `first_user_id`, plays them all with
/// the policy, and summarises.
pub fn play_matches(
    mm: &DevMatchmaker,
    data: &std::sync::Arc<shared_sim::GameData>,
    matches: usize,
    first_user_id: u64,
    pacing: crate::Pacing,
    timeout: std::time::Duration,
) -> anyhow::Result<crate::Summary> {
    let first = data
        .starter_decks
        .first()
        .context("no starter decks")?
        .id
        .clone();
    let last = data
        .starter_decks
        .last()
        .context("no starter decks")?
        .id
        .clone();
    let mut players = Vec::with_capacity(matches * 2);
    for i in 0..matches as u64 {
        let users = [first_user_id + 2 * i, first_user_id + 2 * i + 1];
        let (match_id, tokens) = mm.create_match(users, [&first, &last])?;
        for (user, token) in users.into_iter().zip(tokens) {
            players.push(crate::MatchPlayer::new(
                user,
                match_id,
                token,
                data.clone(),
                pacing,
            )?);
        }
    }
    crate::run_until_done(
        &mut players,
        mm,
        timeout,
        std::time::Duration::from_millis(2),
    );
    Ok(crate::Summary::of(&players))
}

//! The bot's visits to the common area (walk a few steps, leave) and its farm (tend the plots,
//! craft, build a deck), between matches.

use super::*;

impl LobbyBot {
    pub(super) fn go_to_hub(&mut self) {
        self.state = BotState::Walking;
        self.send(&LobbyClientMessage::EnterHub);
    }

    /// Ends the walk and queues.
    pub(super) fn leave_hub(&mut self) {
        if let Some(mut h) = self.hub.take() {
            h.session.leave();
        }
        if self.state == BotState::Walking {
            self.find_match();
        }
    }

    pub(super) fn poll_hub(&mut self) {
        use croft_client::HubEvent;
        let Some(h) = self.hub.as_mut() else {
            return;
        };
        let events = match h.session.poll() {
            Ok(events) if h.started.elapsed() <= Duration::from_secs(20) => events,
            _ => {
                tracing::warn!(bot = %self.username, "common area connection lost");
                return self.leave_hub();
            }
        };
        for e in events {
            match e {
                HubEvent::Welcome { .. } => {
                    h.pos = h.session.me.as_ref().map(|me| (me.x, me.y));
                    self.hub_seen = h.session.players.len();
                }
                HubEvent::MoveRefused { x, y, .. } => {
                    h.pos = Some((x, y));
                    self.hub_steps = self.hub_steps.saturating_sub(1);
                }
                _ => {}
            }
        }
        let Some(pos) = h.pos else {
            return;
        };
        if h.steps_sent < BOT_HUB_STEPS {
            if h.last_step.elapsed() >= Duration::from_millis(150) {
                let to = (pos.0 + 250, pos.1);
                h.session.walk_to(to.0, to.1);
                h.pos = Some(to);
                h.steps_sent += 1;
                self.hub_steps += 1;
                h.last_step = Instant::now();
                if h.steps_sent == BOT_HUB_STEPS {
                    h.session.say(&format!("hello from {}", self.username));
                }
            }
        } else if h.last_step.elapsed() >= Duration::from_millis(300) {
            // Time for the last moves to come back, then off to queue.
            self.leave_hub();
        }
    }

    /// Ends the farm visit and goes on to crafting.
    pub(super) fn leave_farm(&mut self) {
        if let Some(mut f) = self.farm.take() {
            f.session.leave();
        }
        if self.state == BotState::Farming {
            self.state = BotState::Tending;
            self.send(&LobbyClientMessage::Inventory);
        }
    }

    pub(super) fn poll_farm(&mut self) {
        use croft_client::FarmEvent;
        use shared_sim::farm::{FarmAction, Plot};
        let Some(f) = self.farm.as_mut() else {
            return;
        };
        let events = match f.session.poll() {
            Ok(events) if f.started.elapsed() <= Duration::from_secs(30) => events,
            _ => {
                tracing::warn!(bot = %self.username, "farm connection lost");
                return self.leave_farm();
            }
        };
        for e in events {
            if let FarmEvent::Result { seq, error } = e
                && let Some((s, action)) = f.awaiting.take()
            {
                if s == seq && error.is_none() {
                    self.farmed.push(action);
                } else if s != seq {
                    f.awaiting = Some((s, action));
                }
            }
        }
        if f.awaiting.is_some() {
            return;
        }
        let Some(plots) = &f.session.plots else {
            return;
        };
        let crops = &self.data.crops;
        let session = &f.session;
        let next =
            plots.iter().enumerate().find_map(|(i, p)| {
                let plot = i as u8;
                match p {
                    Plot::Withered { .. } => Some(FarmAction::Clear { plot }),
                    Plot::Ripe { .. } => Some(FarmAction::Harvest { plot }),
                    Plot::Growing { crop, water, .. }
                        if crops
                            .iter()
                            .find(|c| c.id == *crop)
                            .is_some_and(|c| i32::from(*water) < c.water_per_stage) =>
                    {
                        Some(FarmAction::Water { plot })
                    }
                    Plot::Empty => crops.iter().find(|c| session.count(&c.seed) > 0).map(|c| {
                        FarmAction::Plant {
                            plot,
                            seed: c.seed.clone(),
                        }
                    }),
                    _ => None,
                }
            });
        match next {
            Some(action) if f.sent < BOT_FARM_ACTIONS => {
                f.sent += 1;
                let seq = f.session.act(action.clone());
                f.awaiting = Some((seq, action));
            }
            // Nothing more to do (or done enough): on to crafting.
            _ => self.leave_farm(),
        }
    }

    /// One tending step from the inventory: craft by the first recipe it can pay for (cards
    /// first), or, with no craft left, save a deck with the crafted cards and choose it.
    pub(super) fn tend(&mut self, items: &[(String, u32)], cards: &[(String, u32)]) {
        let have = |id: &str| items.iter().find(|(i, _)| i == id).map_or(0, |(_, n)| *n);
        if self.crafts_left > 0 {
            let affordable = |r: &&shared_sim::data::RecipeDef| {
                r.inputs.iter().all(|(item, n)| have(item) >= *n as u32)
            };
            let is_card = |r: &&shared_sim::data::RecipeDef| {
                matches!(r.output, shared_sim::data::RecipeOutput::Card(_))
            };
            let pick = self
                .data
                .recipes
                .iter()
                .filter(affordable)
                .find(is_card)
                .or_else(|| self.data.recipes.iter().find(affordable));
            if let Some(recipe) = pick {
                self.crafts_left -= 1;
                let recipe = recipe.id.clone();
                return self.send(&LobbyClientMessage::Craft { recipe });
            }
        }
        let Some(deck) = self.build_deck(cards) else {
            return self.go_to_hub();
        };
        self.deck = Some(deck.clone());
        self.send(&LobbyClientMessage::SaveDeck {
            slot: 0,
            name: format!("{} deck", self.username),
            cards: deck,
        });
        self.send(&LobbyClientMessage::ChooseDeck { slot: Some(0) });
    }

    /// The starter deck with its last cards swapped for owned cards that are not in it.
    pub(super) fn build_deck(&self, cards: &[(String, u32)]) -> Option<Vec<String>> {
        let mut deck = self.data.starter_deck_for(self.user_id())?.cards.clone();
        let max = self.data.rules.max_copies as u32;
        let mut swapped = 0;
        for (card, n) in cards {
            if deck.contains(card) {
                continue;
            }
            for _ in 0..(*n).min(max) {
                if swapped + 1 >= deck.len() {
                    break;
                }
                deck.pop();
                deck.insert(0, card.clone());
                swapped += 1;
            }
        }
        (swapped > 0).then_some(deck)
    }
}

//! The player's items, cards and decks through the lobby connection: inventory, crafting, deck
//! building and the deck to queue with.

use contracts::matchmaking::v1::{FarmRequest, HubPlaceRequest};
use shared_sim::GameData;
use shared_sim::data::RecipeOutput;
use shared_sim::protocol::{DeckEntry, ErrorCode, LobbyServerMessage, MAX_DECK_NAME_CHARS};
use store::{Craft, CraftError, CraftOutput, StoreError};

use super::{Bridge, Reply, UserId};

/// A lobby request about the player's own things.
///
/// The rules come from the card data (recipes, deck size and copies, deck slots); the store
/// makes each craft one transaction. Every request is checked here before the store sees it,
/// and answered with the new state or a named error.
#[derive(Debug, Clone)]
pub enum GameRequest {
    Inventory,
    /// With the session's tag, for the instance's connect token.
    EnterFarm {
        tag: [u8; 16],
    },
    EnterHub {
        tag: [u8; 16],
    },
    Craft(String),
    Decks,
    SaveDeck {
        slot: u8,
        name: String,
        cards: Vec<String>,
    },
    ChooseDeck(Option<u8>),
}

/// The one-time grant every player gets: the starter items of the rules and the cards of
/// their starter deck.
pub const STARTER_GRANT: &str = "starter";

/// Gives `user` the starter kit if they never had it.
pub async fn grant_starter(
    store: &store::Store,
    data: &GameData,
    user: UserId,
) -> Result<bool, StoreError> {
    let items: Vec<(String, i32)> = data
        .rules
        .starter_items
        .iter()
        .map(|(id, n)| (id.clone(), *n as i32))
        .collect();
    let mut cards: Vec<(String, i32)> = Vec::new();
    if let Some(deck) = data.starter_deck_for(user) {
        for c in &deck.cards {
            match cards.iter_mut().find(|(id, _)| id == c) {
                Some((_, n)) => *n += 1,
                None => cards.push((c.clone(), 1)),
            }
        }
    }
    store
        .grant_once(user as i64, STARTER_GRANT, &items, &cards)
        .await
}

impl Bridge {
    fn send(&self, user: UserId, message: LobbyServerMessage) {
        self.reply(Reply::Send { user, message });
    }

    pub(crate) async fn game_job(&self, user: UserId, request: GameRequest) {
        let data = self.data.get();
        let result = match request {
            GameRequest::Inventory => self.send_inventory(user).await,
            GameRequest::EnterFarm { tag } => {
                self.enter_farm(user, tag).await;
                Ok(())
            }
            GameRequest::EnterHub { tag } => self.enter_hub(user, tag).await,
            GameRequest::Craft(recipe) => self.craft(&data, user, &recipe).await,
            GameRequest::Decks => self.send_decks(user).await,
            GameRequest::SaveDeck { slot, name, cards } => {
                self.save_deck(&data, user, slot, name, cards).await
            }
            GameRequest::ChooseDeck(slot) => {
                match self
                    .store
                    .set_active_deck(user as i64, slot.map(i32::from))
                    .await
                {
                    Ok(()) => self.send_decks(user).await,
                    Err(StoreError::NotFound) => {
                        self.failed(user, ErrorCode::InvalidDeck, "no deck in that slot");
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = result {
            self.store_failed(user, &e);
        }
    }

    /// Matchmaking keeps a place in the common area and mints its token.
    async fn enter_hub(&self, user: UserId, tag: [u8; 16]) -> Result<(), StoreError> {
        let name = self
            .store
            .user_by_id(user as i64)
            .await?
            .map(|u| u.username)
            .unwrap_or_else(|| format!("player {user}"));
        let request = HubPlaceRequest {
            user_id: user,
            name,
            session_tag: super::session_tag(tag),
        };
        let placed = self
            .matchmaking
            .open_hub(&request)
            .await
            .map(|r| (r.server_addr, r.connect_token, r.ws_url));
        match place_token(placed) {
            Ok((server_addr, connect_token, ws_url)) => self.send(
                user,
                LobbyServerMessage::HubReady {
                    server_addr,
                    connect_token,
                    ws_url,
                },
            ),
            Err(e) => {
                tracing::warn!(user, error = %e, "no place in the common area");
                self.failed(
                    user,
                    ErrorCode::Unavailable,
                    "the common area is unavailable; try again",
                );
            }
        }
        Ok(())
    }

    /// Matchmaking opens the farm on an instance server and mints its token.
    async fn enter_farm(&self, user: UserId, tag: [u8; 16]) {
        let request = FarmRequest {
            user_id: user,
            session_tag: super::session_tag(tag),
        };
        let placed = self
            .matchmaking
            .open_farm(&request)
            .await
            .map(|r| (r.server_addr, r.connect_token, r.ws_url));
        match place_token(placed) {
            Ok((server_addr, connect_token, ws_url)) => self.send(
                user,
                LobbyServerMessage::FarmReady {
                    server_addr,
                    connect_token,
                    ws_url,
                },
            ),
            Err(e) => {
                tracing::warn!(user, error = %e, "farm not opened");
                self.failed(
                    user,
                    ErrorCode::Unavailable,
                    "the farm could not be opened; try again",
                );
            }
        }
    }

    async fn send_inventory(&self, user: UserId) -> Result<(), StoreError> {
        let items = self.store.inventory(user as i64).await?;
        let cards = self.store.collection(user as i64).await?;
        let counted = |v: Vec<(String, i32)>| {
            v.into_iter()
                .map(|(id, n)| (id, n.max(0) as u32))
                .collect::<Vec<_>>()
        };
        self.send(
            user,
            LobbyServerMessage::Inventory {
                items: counted(items),
                cards: counted(cards),
            },
        );
        Ok(())
    }

    async fn send_decks(&self, user: UserId) -> Result<(), StoreError> {
        let (decks, active) = self.store.decks(user as i64).await?;
        self.send(
            user,
            LobbyServerMessage::Decks {
                decks: decks
                    .into_iter()
                    .map(|d| DeckEntry {
                        slot: d.slot as u8,
                        name: d.name,
                        cards: d.cards,
                    })
                    .collect(),
                active: active.map(|s| s as u8),
            },
        );
        Ok(())
    }

    async fn craft(&self, data: &GameData, user: UserId, recipe: &str) -> Result<(), StoreError> {
        let Some(def) = data.recipe(recipe) else {
            self.failed(user, ErrorCode::UnknownId, format!("no recipe `{recipe}`"));
            return Ok(());
        };
        let (output, quantity, craft_output) = match &def.output {
            RecipeOutput::Card(card) => (card.clone(), 1, CraftOutput::Card(card.clone())),
            RecipeOutput::Item(item, n) => {
                let max_stack = data.item(item).map_or(99, |i| i.max_stack);
                (
                    item.clone(),
                    *n as u32,
                    CraftOutput::Item {
                        id: item.clone(),
                        amount: *n,
                        max_stack,
                    },
                )
            }
        };
        let craft = Craft {
            recipe: def.id.clone(),
            inputs: def.inputs.clone(),
            output: craft_output,
        };
        let event = events::Event::ItemCrafted {
            user_id: user as i64,
            recipe: def.id.clone(),
            output: output.clone(),
            quantity,
        }
        .outbox("connection");
        match self.store.craft(user as i64, &craft, event).await {
            Ok(()) => {
                metrics::counter!("croft_crafts_total", "result" => "ok").increment(1);
                tracing::info!(event = "item_crafted", user, recipe, %output, quantity, "crafted");
                self.send(
                    user,
                    LobbyServerMessage::Crafted {
                        recipe: def.id.clone(),
                        output,
                        quantity,
                    },
                );
                self.send_inventory(user).await
            }
            Err(CraftError::Missing { item, need }) => {
                metrics::counter!("croft_crafts_total", "result" => "refused").increment(1);
                self.failed(
                    user,
                    ErrorCode::NotEnoughItems,
                    format!("`{recipe}` needs {need} `{item}`"),
                );
                Ok(())
            }
            Err(CraftError::Full(id)) => {
                metrics::counter!("croft_crafts_total", "result" => "refused").increment(1);
                self.failed(
                    user,
                    ErrorCode::InventoryFull,
                    format!("no room for `{id}`"),
                );
                Ok(())
            }
            Err(CraftError::Store(e)) => Err(e),
        }
    }

    async fn save_deck(
        &self,
        data: &GameData,
        user: UserId,
        slot: u8,
        name: String,
        cards: Vec<String>,
    ) -> Result<(), StoreError> {
        let name = name.trim().to_string();
        let chars = name.chars().count();
        if usize::from(slot) >= data.rules.deck_slots {
            self.failed(
                user,
                ErrorCode::InvalidDeck,
                format!("deck slots are 0 to {}", data.rules.deck_slots - 1),
            );
            return Ok(());
        }
        if chars == 0 || chars > MAX_DECK_NAME_CHARS || name.chars().any(char::is_control) {
            self.failed(
                user,
                ErrorCode::InvalidDeck,
                format!("a deck name has 1 to {MAX_DECK_NAME_CHARS} characters"),
            );
            return Ok(());
        }
        let owned = self.store.collection(user as i64).await?;
        let have = |card: &str| {
            owned
                .iter()
                .find(|(c, _)| c == card)
                .map_or(0, |(_, n)| (*n).max(0) as u32)
        };
        if let Err(e) = data.check_owned_deck(&cards, have) {
            self.failed(user, ErrorCode::InvalidDeck, e.to_string());
            return Ok(());
        }
        self.store
            .save_deck(user as i64, i32::from(slot), &name, &cards)
            .await?;
        self.send_decks(user).await
    }
}

/// Matchmaking's answer for a farm or hub place (address, base64 token, WebSocket URL) with the
/// token's bytes decoded.
fn place_token(
    placed: Result<(std::net::SocketAddr, String, Option<String>), contracts::CallError>,
) -> Result<(std::net::SocketAddr, Vec<u8>, Option<String>), String> {
    let (server_addr, token, ws_url) = placed.map_err(|e| e.to_string())?;
    let bytes = super::token_bytes(&token).ok_or("matchmaking sent an undecodable token")?;
    Ok((server_addr, bytes, ws_url))
}

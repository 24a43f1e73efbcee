//! Farming as pure functions: a farm is a row of plots that take a seed, need water, grow over
//! farm ticks, wait ripe for the harvest and wither when neglected.

use serde::{Deserialize, Serialize};

use crate::data::CropDef;

/// Farm ticks per second: growth numbers in `crops.ron` are in these ticks.
pub const FARM_TICKS_PER_SECOND: u64 = 1;

/// One plot.
///
/// A plot takes a seed, needs water each growth stage, grows through the crop's stages over
/// fixed farm ticks, waits ripe for the harvest, and withers when neglected (thirsty or
/// unharvested) for the crop's `wither_ticks`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Plot {
    #[default]
    Empty,
    Growing {
        /// The crop's id in `crops.ron` (ids, not positions, so that saved farms survive
        /// edits of the data; a plot whose crop left the data stays as it is).
        crop: String,
        /// Stages completed (0 .. stages).
        stage: u8,
        /// Watered ticks spent in this stage.
        progress: u32,
        /// Waterings received in this stage (at most the crop's `water_per_stage`).
        water: u8,
        /// Ticks the plot has been thirsty in a row.
        neglect: u32,
    },
    Ripe {
        crop: String,
        /// Ticks since it ripened.
        neglect: u32,
    },
    Withered {
        crop: String,
    },
}

/// A farming action on one plot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FarmAction {
    /// Plant the seed item `seed` (an item id from `items.ron`).
    Plant {
        plot: u8,
        seed: String,
    },
    Water {
        plot: u8,
    },
    Harvest {
        plot: u8,
    },
    /// Clear a withered plot.
    Clear {
        plot: u8,
    },
}

impl FarmAction {
    pub fn plot(&self) -> u8 {
        match self {
            FarmAction::Plant { plot, .. }
            | FarmAction::Water { plot }
            | FarmAction::Harvest { plot }
            | FarmAction::Clear { plot } => *plot,
        }
    }
}

/// Why a farming action was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum FarmError {
    #[error("no such plot")]
    NoSuchPlot,
    #[error("the plot is not empty")]
    PlotNotEmpty,
    #[error("that item is not a seed of any crop")]
    NotASeed,
    #[error("the seed is not in the inventory")]
    MissingSeed,
    #[error("nothing is growing on the plot")]
    NothingGrowing,
    #[error("the crop has all the water this stage needs")]
    AlreadyWatered,
    #[error("the crop is not ripe")]
    NotRipe,
    #[error("the plot has not withered")]
    NotWithered,
    #[error("the inventory has no room for the harvest")]
    InventoryFull,
    #[error("the previous action is still being saved")]
    Busy,
    #[error("the farm could not be saved; try again")]
    Unavailable,
}

/// What an accepted action does to the inventory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FarmEffect {
    None,
    /// One seed item was used.
    Consumed(String),
    /// Items were harvested.
    Produced(String, u32),
}

impl Plot {
    /// The crop on the plot, if any.
    pub fn crop(&self) -> Option<&str> {
        match self {
            Plot::Empty => None,
            Plot::Growing { crop, .. } | Plot::Ripe { crop, .. } | Plot::Withered { crop } => {
                Some(crop.as_str())
            }
        }
    }

    fn watered(water: u8, def: &CropDef) -> bool {
        i32::from(water) >= def.water_per_stage
    }

    /// `ticks` farm ticks at once, in a few steps per growth stage whatever `ticks` is.
    ///
    /// Time moves only by this, for a running farm (a tick at a time) and for one that loads
    /// after its player was away (all the ticks since) alike. The property test at the end of
    /// this file checks it against a one-tick-at-a-time reference over random timelines of
    /// waits and actions.
    pub fn advance(&mut self, crops: &[CropDef], mut ticks: u64) {
        let Some(def) = self.crop().and_then(|c| crops.iter().find(|d| d.id == c)) else {
            return;
        };
        let wither = def.wither_ticks.max(1) as u64;
        let per_stage = def.ticks_per_stage.max(1) as u64;
        while ticks > 0 {
            match self {
                Plot::Growing {
                    crop,
                    stage,
                    progress,
                    water,
                    neglect,
                } => {
                    if Self::watered(*water, def) {
                        *neglect = 0;
                        let need = per_stage - u64::from(*progress);
                        if ticks < need {
                            *progress += ticks as u32;
                            return;
                        }
                        ticks -= need;
                        *stage += 1;
                        *progress = 0;
                        *water = 0;
                        if i32::from(*stage) >= def.stages {
                            *self = Plot::Ripe {
                                crop: crop.clone(),
                                neglect: 0,
                            };
                        }
                    } else {
                        let left = wither - u64::from(*neglect);
                        if ticks < left {
                            *neglect += ticks as u32;
                        } else {
                            *self = Plot::Withered { crop: crop.clone() };
                        }
                        return;
                    }
                }
                Plot::Ripe { crop, neglect } => {
                    let left = wither - u64::from(*neglect);
                    if ticks < left {
                        *neglect += ticks as u32;
                    } else {
                        *self = Plot::Withered { crop: crop.clone() };
                    }
                    return;
                }
                Plot::Empty | Plot::Withered { .. } => return,
            }
        }
    }
}

/// A player's farm: its plots and the farm tick they are advanced to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Farm {
    pub plots: Vec<Plot>,
    /// The farm tick the plots are at (ticks since the Unix epoch, at [`FARM_TICKS_PER_SECOND`]).
    pub tick: u64,
}

impl Farm {
    pub fn new(plots: usize, tick: u64) -> Farm {
        Farm {
            plots: vec![Plot::Empty; plots],
            tick,
        }
    }

    /// Brings the farm to tick `now` (a farm never goes back in time).
    pub fn advance_to(&mut self, crops: &[CropDef], now: u64) {
        if now <= self.tick {
            return;
        }
        let ticks = now - self.tick;
        for plot in &mut self.plots {
            plot.advance(crops, ticks);
        }
        self.tick = now;
    }

    /// Validates and applies `action`. `has_seed` answers whether the inventory holds the seed
    /// item; `room_for` whether it can take the harvest. Nothing changes when it is refused.
    pub fn apply(
        &mut self,
        crops: &[CropDef],
        action: &FarmAction,
        has_seed: impl FnOnce(&str) -> bool,
        room_for: impl FnOnce(&str, u32) -> bool,
    ) -> Result<FarmEffect, FarmError> {
        let plot = self
            .plots
            .get_mut(usize::from(action.plot()))
            .ok_or(FarmError::NoSuchPlot)?;
        match action {
            FarmAction::Plant { seed, .. } => {
                if *plot != Plot::Empty {
                    return Err(FarmError::PlotNotEmpty);
                }
                let crop = crops
                    .iter()
                    .find(|c| c.seed == *seed)
                    .ok_or(FarmError::NotASeed)?;
                if !has_seed(seed) {
                    return Err(FarmError::MissingSeed);
                }
                *plot = Plot::Growing {
                    crop: crop.id.clone(),
                    stage: 0,
                    progress: 0,
                    water: 0,
                    neglect: 0,
                };
                Ok(FarmEffect::Consumed(seed.clone()))
            }
            FarmAction::Water { .. } => {
                let Plot::Growing { crop, water, .. } = plot else {
                    return Err(FarmError::NothingGrowing);
                };
                let Some(def) = crops.iter().find(|d| d.id == *crop) else {
                    return Err(FarmError::NothingGrowing);
                };
                if Plot::watered(*water, def) {
                    return Err(FarmError::AlreadyWatered);
                }
                *water += 1;
                Ok(FarmEffect::None)
            }
            FarmAction::Harvest { .. } => {
                let Plot::Ripe { crop, .. } = plot else {
                    return Err(FarmError::NotRipe);
                };
                let Some(def) = crops.iter().find(|d| d.id == *crop) else {
                    return Err(FarmError::NotRipe);
                };
                let amount = def.yield_amount.max(0) as u32;
                if !room_for(&def.produce, amount) {
                    return Err(FarmError::InventoryFull);
                }
                let produce = def.produce.clone();
                *plot = Plot::Empty;
                Ok(FarmEffect::Produced(produce, amount))
            }
            FarmAction::Clear { .. } => {
                if !matches!(plot, Plot::Withered { .. }) {
                    return Err(FarmError::NotWithered);
                }
                *plot = Plot::Empty;
                Ok(FarmEffect::None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn crops() -> Vec<CropDef> {
        vec![
            CropDef {
                id: "wheat".into(),
                seed: "wheat_seed".into(),
                produce: "wheat".into(),
                stages: 3,
                ticks_per_stage: 5,
                water_per_stage: 1,
                wither_ticks: 7,
                yield_amount: 3,
            },
            CropDef {
                id: "cactus".into(),
                seed: "cactus_seed".into(),
                produce: "cactus".into(),
                stages: 2,
                ticks_per_stage: 4,
                water_per_stage: 0,
                wither_ticks: 3,
                yield_amount: 1,
            },
            CropDef {
                id: "pumpkin".into(),
                seed: "pumpkin_seed".into(),
                produce: "pumpkin".into(),
                stages: 4,
                ticks_per_stage: 2,
                water_per_stage: 2,
                wither_ticks: 10,
                yield_amount: 1,
            },
        ]
    }

    /// One farm tick, the long way: the reference `Plot::advance` is tested against.
    fn reference_step(plot: &mut Plot, crops: &[CropDef]) {
        let Some(def) = plot.crop().and_then(|c| crops.iter().find(|d| d.id == c)) else {
            return;
        };
        let wither = def.wither_ticks.max(1) as u32;
        match plot {
            Plot::Growing {
                crop,
                stage,
                progress,
                water,
                neglect,
            } => {
                if Plot::watered(*water, def) {
                    *neglect = 0;
                    *progress += 1;
                    if *progress >= def.ticks_per_stage.max(1) as u32 {
                        *stage += 1;
                        *progress = 0;
                        *water = 0;
                        if i32::from(*stage) >= def.stages {
                            *plot = Plot::Ripe {
                                crop: crop.clone(),
                                neglect: 0,
                            };
                        }
                    }
                } else {
                    *neglect += 1;
                    if *neglect >= wither {
                        *plot = Plot::Withered { crop: crop.clone() };
                    }
                }
            }
            Plot::Ripe { crop, neglect } => {
                *neglect += 1;
                if *neglect >= wither {
                    *plot = Plot::Withered { crop: crop.clone() };
                }
            }
            Plot::Empty | Plot::Withered { .. } => {}
        }
    }

    fn apply(farm: &mut Farm, action: &FarmAction) -> Result<FarmEffect, FarmError> {
        farm.apply(&crops(), action, |_| true, |_, _| true)
    }

    #[test]
    fn a_watered_crop_ripens_and_is_harvested() {
        let c = crops();
        let mut farm = Farm::new(2, 100);
        let plant = FarmAction::Plant {
            plot: 0,
            seed: "wheat_seed".into(),
        };
        assert_eq!(
            apply(&mut farm, &plant),
            Ok(FarmEffect::Consumed("wheat_seed".into()))
        );
        assert_eq!(apply(&mut farm, &plant), Err(FarmError::PlotNotEmpty));
        for _ in 0..3 {
            assert_eq!(
                apply(&mut farm, &FarmAction::Water { plot: 0 }),
                Ok(FarmEffect::None)
            );
            assert_eq!(
                apply(&mut farm, &FarmAction::Water { plot: 0 }),
                Err(FarmError::AlreadyWatered)
            );
            assert_eq!(
                apply(&mut farm, &FarmAction::Harvest { plot: 0 }),
                Err(FarmError::NotRipe)
            );
            let t = farm.tick + 5;
            farm.advance_to(&c, t);
        }
        assert_eq!(
            farm.plots[0],
            Plot::Ripe {
                crop: "wheat".into(),
                neglect: 0
            }
        );
        assert_eq!(
            apply(&mut farm, &FarmAction::Harvest { plot: 0 }),
            Ok(FarmEffect::Produced("wheat".into(), 3))
        );
        assert_eq!(farm.plots[0], Plot::Empty);
    }

    #[test]
    fn neglect_withers_and_bad_actions_are_refused() {
        let c = crops();
        let mut farm = Farm::new(1, 0);
        assert_eq!(
            apply(&mut farm, &FarmAction::Water { plot: 3 }),
            Err(FarmError::NoSuchPlot)
        );
        assert_eq!(
            apply(
                &mut farm,
                &FarmAction::Plant {
                    plot: 0,
                    seed: "wheat".into()
                }
            ),
            Err(FarmError::NotASeed)
        );
        assert_eq!(
            farm.apply(
                &c,
                &FarmAction::Plant {
                    plot: 0,
                    seed: "wheat_seed".into()
                },
                |_| false,
                |_, _| true
            ),
            Err(FarmError::MissingSeed)
        );
        assert_eq!(
            farm.plots[0],
            Plot::Empty,
            "a refused action changes nothing"
        );
        apply(
            &mut farm,
            &FarmAction::Plant {
                plot: 0,
                seed: "wheat_seed".into(),
            },
        )
        .unwrap();
        farm.advance_to(&c, 6);
        assert!(matches!(farm.plots[0], Plot::Growing { neglect: 6, .. }));
        farm.advance_to(&c, 7);
        assert_eq!(
            farm.plots[0],
            Plot::Withered {
                crop: "wheat".into()
            }
        );
        assert_eq!(
            apply(&mut farm, &FarmAction::Harvest { plot: 0 }),
            Err(FarmError::NotRipe)
        );
        assert_eq!(
            apply(&mut farm, &FarmAction::Clear { plot: 0 }),
            Ok(FarmEffect::None)
        );
        assert_eq!(
            apply(&mut farm, &FarmAction::Clear { plot: 0 }),
            Err(FarmError::NotWithered)
        );
    }

    #[derive(Clone, Debug)]
    enum Step {
        Wait(u64),
        Act(FarmAction),
    }

    fn step_strategy() -> impl Strategy<Value = Step> {
        let seeds = prop_oneof![
            Just("wheat_seed".to_string()),
            Just("cactus_seed".to_string()),
            Just("pumpkin_seed".to_string())
        ];
        prop_oneof![
            3 => (0u64..40).prop_map(Step::Wait),
            2 => (0u8..3).prop_map(|plot| Step::Act(FarmAction::Water { plot })),
            1 => (0u8..3, seeds).prop_map(|(plot, seed)| Step::Act(FarmAction::Plant { plot, seed })),
            1 => (0u8..3).prop_map(|plot| Step::Act(FarmAction::Harvest { plot })),
            1 => (0u8..3).prop_map(|plot| Step::Act(FarmAction::Clear { plot })),
        ]
    }

    proptest! {
        /// A farm advanced in jumps (as when it loads after its player was away) ends exactly
        /// where the same farm advanced tick by tick does, with the same actions accepted.
        #[test]
        fn offline_growth_equals_simulated_growth(
            steps in proptest::collection::vec(step_strategy(), 1..80),
            start in 0u64..1_000_000,
        ) {
            let c = crops();
            let mut jumped = Farm::new(3, start);
            let mut ticked = Farm::new(3, start);
            let mut now = start;
            for step in &steps {
                match step {
                    Step::Wait(n) => {
                        now += n;
                        jumped.advance_to(&c, now);
                        for _ in 0..*n {
                            for plot in &mut ticked.plots {
                                reference_step(plot, &c);
                            }
                        }
                        ticked.tick = now;
                    }
                    Step::Act(action) => {
                        let a = apply(&mut jumped, action);
                        let b = apply(&mut ticked, action);
                        prop_assert_eq!(a, b);
                    }
                }
                prop_assert_eq!(&jumped, &ticked);
            }
        }
    }
}

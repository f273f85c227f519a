//! Voice disguise: a participant who hides its face can hide its voice too, on the server.
//! Its Opus packets are decoded, disguised ([`disguise`]: the pitch and the formants moved
//! apart, never towards another real person) and encoded again; everyone else's audio is
//! forwarded untouched. Once a disguise is chosen the stream fails closed: a packet that
//! cannot be disguised in time goes out as silence, never as the speaker's own voice.
//!
//! - [`Voice`]: the presets a participant chooses from (`none`, `lower`, `higher`,
//!   `neutral`, `robot`), and what each does ([`Preset`]).
//! - [`Voices`]: who chose which (set from the voice API or a WHIP publisher's query) and the
//!   disguise the streams build; it reports each speaker's [`VoiceState`].
//! - [`stream`]: one published audio stream's decode ▸ disguise ▸ encode, on its own thread.
//! - [`analysis`]: pitch, formants and discontinuities of speech, for the tests and the bench.

pub mod analysis;
pub mod disguise;
pub mod lpc;
pub mod stream;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub use disguise::{Disguiser, Preset};

/// A voice preset, as the page, the API and WHIP publishers name it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Voice {
    /// The speaker's own voice, forwarded untouched.
    #[default]
    None,
    /// Pitch down (×0.78) and the formants down less (×0.88): a deeper, larger voice.
    Lower,
    /// Pitch up (×1.32) and the formants up less (×1.14): a higher, smaller voice.
    Higher,
    /// Pitch up (×1.15), the formants down (×0.87): moved apart, towards no one in particular.
    Neutral,
    /// A monotone at 100 Hz with the formants down a little (×0.92): words without the
    /// speaker's melody.
    Robot,
}

impl Voice {
    pub const ALL: [Voice; 5] = [
        Voice::None,
        Voice::Lower,
        Voice::Higher,
        Voice::Neutral,
        Voice::Robot,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Voice::None => "none",
            Voice::Lower => "lower",
            Voice::Higher => "higher",
            Voice::Neutral => "neutral",
            Voice::Robot => "robot",
        }
    }

    /// What the disguise does; `None` for the speaker's own voice.
    pub fn preset(self) -> Option<Preset> {
        let moved = |pitch, formant| Preset {
            pitch,
            formant,
            monotone: None,
        };
        match self {
            Voice::None => None,
            Voice::Lower => Some(moved(0.78, 0.88)),
            Voice::Higher => Some(moved(1.32, 1.14)),
            Voice::Neutral => Some(moved(1.15, 0.87)),
            Voice::Robot => Some(Preset {
                pitch: 1.0,
                formant: 0.92,
                monotone: Some(100.0),
            }),
        }
    }
}

impl std::str::FromStr for Voice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Voice::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Voice::ALL.iter().map(|v| v.as_str()).collect();
                format!(
                    "unknown voice {:?}; expected one of {}",
                    s.chars().take(40).collect::<String>(),
                    names.join(", ")
                )
            })
    }
}

/// What a speaker's audio carries now, as its stream reports it: disclosed to everyone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VoiceState {
    /// No disguise chosen: the speaker's own voice.
    #[default]
    None,
    /// The chosen disguise.
    Disguised,
    /// A disguise is chosen but could not be applied (a stage error, an overload): silence
    /// goes out instead of the voice.
    Silenced,
}

/// One voice's disguise as a stream runs it. [`Disguiser`] is the product's; tests put in
/// stages that fail.
pub trait VoiceStage: Send {
    /// Disguises 16 kHz mono samples in place.
    fn process(&mut self, samples: &mut [f32]) -> Result<(), String>;
}

impl VoiceStage for Disguiser {
    fn process(&mut self, samples: &mut [f32]) -> Result<(), String> {
        Disguiser::process(self, samples);
        Ok(())
    }
}

/// Builds the stage of a stream for a preset.
pub type StageFactory = Arc<dyn Fn(Preset) -> Box<dyn VoiceStage> + Send + Sync>;

/// Told whenever what a speaker's audio carries changes: (participant, state, reason).
pub type VoiceListener = Arc<dyn Fn(&str, VoiceState, Option<&'static str>) + Send + Sync>;

/// Who chose which voice, read by their audio streams on every packet and set from the voice
/// API (or a WHIP publisher's query) at any time.
pub struct Voices {
    chosen: RwLock<HashMap<String, Voice>>,
    factory: StageFactory,
    listener: RwLock<Option<VoiceListener>>,
}

impl Default for Voices {
    fn default() -> Self {
        Self::with_stage(Arc::new(|preset| Box::new(Disguiser::new(preset))))
    }
}

impl Voices {
    /// Voices disguised by the stages `factory` builds.
    pub fn with_stage(factory: StageFactory) -> Self {
        Self {
            chosen: RwLock::new(HashMap::new()),
            factory,
            listener: RwLock::new(None),
        }
    }

    /// The voice `participant` chose (`none` if it chose none).
    pub fn get(&self, participant: &str) -> Voice {
        let chosen = self.chosen.read().unwrap_or_else(|e| e.into_inner());
        chosen.get(participant).copied().unwrap_or_default()
    }

    /// Sets (or, with `none`, clears) `participant`'s voice.
    pub fn set(&self, participant: &str, voice: Voice) {
        let mut chosen = self.chosen.write().unwrap_or_else(|e| e.into_inner());
        if voice == Voice::None {
            chosen.remove(participant);
        } else {
            chosen.insert(participant.to_owned(), voice);
        }
    }

    /// Forgets `participant` (it left).
    pub fn clear(&self, participant: &str) {
        self.set(participant, Voice::None);
    }

    pub fn stage(&self, preset: Preset) -> Box<dyn VoiceStage> {
        (self.factory)(preset)
    }

    pub fn watch(&self, listener: VoiceListener) {
        *self.listener.write().unwrap_or_else(|e| e.into_inner()) = Some(listener);
    }

    /// Tells the listener what `participant`'s audio carries now.
    pub fn report(&self, participant: &str, state: VoiceState, reason: Option<&'static str>) {
        let listener = self
            .listener
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(listener) = listener {
            listener(participant, state, reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voices_parse_by_name_and_name_the_choices_when_unknown() {
        for v in Voice::ALL {
            assert_eq!(v.as_str().parse::<Voice>(), Ok(v));
            assert_eq!(
                serde_json::to_string(&v).unwrap(),
                format!("\"{}\"", v.as_str())
            );
        }
        let err = "whisper".parse::<Voice>().unwrap_err();
        assert!(err.contains("none, lower, higher, neutral, robot"), "{err}");
        assert_eq!(Voice::None.preset(), None);
        assert!(Voice::ALL[1..].iter().all(|v| v.preset().is_some()));
    }

    #[test]
    fn a_voice_is_kept_per_participant_until_cleared() {
        let voices = Voices::default();
        assert_eq!(voices.get("a"), Voice::None);
        voices.set("a", Voice::Robot);
        voices.set("b", Voice::Lower);
        assert_eq!(voices.get("a"), Voice::Robot);
        voices.clear("a");
        assert_eq!(voices.get("a"), Voice::None);
        assert_eq!(voices.get("b"), Voice::Lower);
    }
}

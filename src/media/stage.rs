//! The seam between the relay and whatever transforms frames (the face swap).

use super::I420Frame;

/// Identifies one published video stream for the lifetime of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// Creates one [`StreamProcessor`] per published video stream.
///
/// Implementations are shared by every stream of the server; per-stream state (tracking,
/// smoothing) lives in the processor it opens. `owner` is the publishing participant's id
/// (as in signalling, e.g. `p7`), by which per-participant choices such as the face are found.
pub trait FrameStage: Send + Sync + 'static {
    fn open(&self, stream: StreamId, owner: &str) -> Box<dyn StreamProcessor>;
}

/// Transforms the decoded frames of one stream, in order, on a codec thread (never on tokio's
/// workers). It may block on inference; it must not panic on any frame.
pub trait StreamProcessor: Send + 'static {
    fn process(&mut self, frame: &mut I420Frame);

    /// Whether the frame last processed carries a swapped face (its encoded access unit is
    /// then marked, see [`super::sei`]).
    fn swapped(&self) -> bool {
        false
    }
}

/// The stage that leaves every frame as it is.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdentityStage;

struct Identity;

impl StreamProcessor for Identity {
    fn process(&mut self, _frame: &mut I420Frame) {}
}

impl FrameStage for IdentityStage {
    fn open(&self, _stream: StreamId, _owner: &str) -> Box<dyn StreamProcessor> {
        Box::new(Identity)
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A processor that does nothing (tests of the pipeline itself).
    pub struct Nop;

    impl StreamProcessor for Nop {
        fn process(&mut self, _frame: &mut I420Frame) {}
    }
}

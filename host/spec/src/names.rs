//! What eddy names for a pipeline on the broker.

/// The names of what eddy keeps for a pipeline on the broker: consumer
/// groups and internal topics. Pipeline names are lower-case and may not end
/// in `.step-N`, so these never collide across pipelines.
#[derive(Clone, Copy, Debug)]
pub struct InternalNames<'a> {
    /// The daemon's group prefix.
    pub prefix: &'a str,
    /// The pipeline's name.
    pub pipeline: &'a str,
}

impl InternalNames<'_> {
    /// The consumer group of `step`; the first step's is the pipeline's.
    pub fn group(&self, step: u32) -> String {
        match step {
            0 => format!("{}{}", self.prefix, self.pipeline),
            n => format!("{}{}.step-{n}", self.prefix, self.pipeline),
        }
    }

    /// The compacted changelog of `step`'s state.
    pub fn changelog(&self, step: u32) -> String {
        format!("{}{}.step-{step}.changelog", self.prefix, self.pipeline)
    }

    /// The topic feeding `step` (from 1), partitioned by murmur2 of the key.
    pub fn repartition(&self, step: u32) -> String {
        format!("{}{}.step-{step}.repartition", self.prefix, self.pipeline)
    }

    /// Where the dead-letter policy sends failed records. Not deleted with
    /// the pipeline: it holds records someone has to look at.
    pub fn dead_letter(&self) -> String {
        format!("{}.dlq", self.pipeline)
    }

    /// Every internal topic of a pipeline with `steps` steps.
    pub fn topics(&self, steps: usize) -> Vec<String> {
        let steps = u32::try_from(steps).unwrap_or(0);
        (0..steps)
            .map(|s| self.changelog(s))
            .chain((1..steps).map(|s| self.repartition(s)))
            .collect()
    }
}

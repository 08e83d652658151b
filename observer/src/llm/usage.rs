//! Token usage as the provider reported it.
use super::{LlmCall, attr};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// All input tokens, cached ones included (as the semantic conventions ask).
    pub input: Option<u64>,
    pub output: Option<u64>,
    pub cache_read: Option<u64>,
    pub cache_creation: Option<u64>,
    pub reasoning: Option<u64>,
}

impl Usage {
    /// Usage from a provider that counts input apart from cache reads and writes (Anthropic,
    /// Bedrock): the conventions' input count includes them.
    pub fn with_cache_apart(
        uncached_input: Option<u64>,
        output: Option<u64>,
        cache_read: Option<u64>,
        cache_creation: Option<u64>,
    ) -> Usage {
        let input = uncached_input.map(|uncached| {
            [cache_read, cache_creation]
                .into_iter()
                .flatten()
                .fold(uncached, u64::saturating_add)
        });
        Usage {
            input,
            output,
            cache_read,
            cache_creation,
            reasoning: None,
        }
    }

    /// Folds in a later report (streams report usage in pieces); later values win.
    pub fn update(&mut self, later: Usage) {
        self.input = later.input.or(self.input);
        self.output = later.output.or(self.output);
        self.cache_read = later.cache_read.or(self.cache_read);
        self.cache_creation = later.cache_creation.or(self.cache_creation);
        self.reasoning = later.reasoning.or(self.reasoning);
    }

    pub fn record(&self, call: &mut LlmCall) {
        let counts = [
            (attr::USAGE_INPUT_TOKENS, self.input),
            (attr::USAGE_OUTPUT_TOKENS, self.output),
            (attr::USAGE_CACHE_READ_INPUT_TOKENS, self.cache_read),
            (attr::USAGE_CACHE_CREATION_INPUT_TOKENS, self.cache_creation),
            (attr::USAGE_REASONING_OUTPUT_TOKENS, self.reasoning),
        ];
        let mut reported = false;
        for (key, count) in counts {
            if let Some(count) = count {
                call.set(key, count);
                reported = true;
            }
        }
        if reported {
            call.set(attr::OBSERVER_USAGE_SOURCE, "reported");
        }
    }
}

//! What a call cost in USD, from a price table kept as data (`observer/data/prices.toml`),
//! searched after a user's own table (`--prices FILE`, same format). A call whose price or
//! usage is unknown says why instead of a cost.
use std::path::Path;
use std::sync::OnceLock;

use anyhow::Context;
use serde::Deserialize;
use serde_json::Value;

use super::{LlmCall, attr};

const BUILT_IN: &str = include_str!("../../data/prices.toml");

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    #[serde(default)]
    price: Vec<Price>,
}

/// USD per million tokens for the models matching `models` at `providers`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Price {
    providers: Vec<String>,
    models: Vec<String>,
    input: f64,
    output: f64,
    cached_input: Option<f64>,
    cache_write: Option<f64>,
}

impl PriceTable {
    pub fn parse(text: &str) -> anyhow::Result<PriceTable> {
        let table: PriceTable = toml::from_str(text)?;
        let negative = table.price.iter().find(|p| {
            [Some(p.input), Some(p.output), p.cached_input, p.cache_write]
                .into_iter()
                .flatten()
                // NaN is not a price either.
                .any(|v| v.is_nan() || v < 0.0)
        });
        if let Some(price) = negative {
            anyhow::bail!("prices must be zero or more, found {price:?}");
        }
        Ok(table)
    }

    pub fn load(path: &Path) -> anyhow::Result<PriceTable> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the price table {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in the price table {}", path.display()))
    }

    fn find(&self, provider: &str, model: &str) -> Option<&Price> {
        self.price.iter().find(|price| {
            price.providers.iter().any(|p| p == "*" || p == provider)
                && price
                    .models
                    .iter()
                    .any(|pattern| wildcard_match(pattern, model))
        })
    }
}

/// The prices calls are costed at: a user's table (`--prices`), if any, before the built-in one.
#[derive(Clone, Debug, Default)]
pub struct Prices {
    pub user: Option<PriceTable>,
}

impl Prices {
    fn find(&self, provider: &str, model: &str) -> Option<&Price> {
        self.user
            .as_ref()
            .and_then(|table| table.find(provider, model))
            .or_else(|| built_in().find(provider, model))
    }
}

fn built_in() -> &'static PriceTable {
    static TABLE: OnceLock<PriceTable> = OnceLock::new();
    // The built-in table is checked by a unit test; an empty one only makes prices unknown.
    TABLE.get_or_init(|| PriceTable::parse(BUILT_IN).unwrap_or_default())
}

/// Records `observer.cost.usd`, or `observer.cost.unknown` saying why there is none.
pub(crate) fn record(call: &mut LlmCall, prices: &Prices) {
    let provider = call.provider.clone();
    let models: Vec<String> = [attr::RESPONSE_MODEL, attr::REQUEST_MODEL]
        .iter()
        .filter_map(|key| call.attribute(key).and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    let price = models
        .iter()
        .find_map(|model| prices.find(&provider, model));
    let Some(price) = price else {
        let model = models.first().map_or("no model", String::as_str);
        call.set(
            attr::OBSERVER_COST_UNKNOWN,
            format!("no price for {provider} model {model}"),
        );
        return;
    };
    let count = |key| call.attribute(key).and_then(Value::as_u64);
    let (Some(input), output) = (
        count(attr::USAGE_INPUT_TOKENS),
        count(attr::USAGE_OUTPUT_TOKENS),
    ) else {
        call.set(attr::OBSERVER_COST_UNKNOWN, "no token usage");
        return;
    };
    let cache_read = count(attr::USAGE_CACHE_READ_INPUT_TOKENS).unwrap_or(0);
    let cache_write = count(attr::USAGE_CACHE_CREATION_INPUT_TOKENS).unwrap_or(0);
    let mut output = output.unwrap_or(0);
    // Gemini counts thinking apart from the candidates' tokens, and bills it as output.
    if provider.starts_with("gcp.") {
        output += count(attr::USAGE_REASONING_OUTPUT_TOKENS).unwrap_or(0);
    }
    // The input count includes cache reads and writes (see `Usage`).
    let uncached = input.saturating_sub(cache_read).saturating_sub(cache_write);
    let usd = (uncached as f64 * price.input
        + cache_read as f64 * price.cached_input.unwrap_or(price.input)
        + cache_write as f64 * price.cache_write.unwrap_or(price.input)
        + output as f64 * price.output)
        / 1e6;
    call.set(attr::OBSERVER_COST_USD, usd);
}

/// `pattern` against `text`, '*' matching any run of characters (none included).
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty(); // no '*' at all
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn priced(provider: &str, attributes: Value, user: Option<&PriceTable>) -> LlmCall {
        let mut call = LlmCall::new(provider, "chat");
        for (key, value) in attributes.as_object().unwrap() {
            call.set(key, value.clone());
        }
        let prices = Prices {
            user: user.cloned(),
        };
        record(&mut call, &prices);
        call
    }

    fn usd(call: &LlmCall) -> f64 {
        call.attribute(attr::OBSERVER_COST_USD)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("no cost: {:?}", call.attributes))
    }

    #[test]
    fn the_built_in_table_parses_and_covers_the_main_families() {
        let table = PriceTable::parse(BUILT_IN).expect("observer/data/prices.toml");
        assert!(table.price.len() > 30);
        for (provider, model) in [
            ("openai", "gpt-4o-mini-2024-07-18"),
            ("azure.ai.openai", "gpt-4.1"),
            ("anthropic", "claude-sonnet-4-5-20250929"),
            ("aws.bedrock", "us.anthropic.claude-3-5-haiku-20241022-v1:0"),
            ("aws.bedrock", "amazon.nova-lite-v1:0"),
            ("gcp.gemini", "gemini-2.5-flash"),
            ("ollama", "llama3.2"),
        ] {
            assert!(table.find(provider, model).is_some(), "{provider} {model}");
        }
        // The more specific pattern comes first.
        let mini = table.find("openai", "gpt-4o-mini").unwrap();
        assert_eq!(mini.input, 0.15);
    }

    #[test]
    fn prices_uncached_cached_and_output_tokens() {
        // gpt-4o: 2.50 in, 1.25 cached, 10.00 out per million.
        let call = priced(
            "openai",
            json!({"gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.usage.input_tokens": 1_000_000, "gen_ai.usage.cache_read.input_tokens": 400_000,
                "gen_ai.usage.output_tokens": 100_000}),
            None,
        );
        assert!((usd(&call) - (0.6 * 2.5 + 0.4 * 1.25 + 0.1 * 10.0)).abs() < 1e-9);
        // Gemini: thinking billed as output.
        let call = priced(
            "gcp.gemini",
            json!({"gen_ai.request.model": "gemini-2.5-flash", "gen_ai.usage.input_tokens": 1000,
                "gen_ai.usage.output_tokens": 1000, "gen_ai.usage.reasoning.output_tokens": 1000}),
            None,
        );
        assert!((usd(&call) - (1000.0 * 0.30 + 2000.0 * 2.50) / 1e6).abs() < 1e-12);
    }

    #[test]
    fn unknown_prices_and_usage_say_so_and_user_prices_win() {
        let call = priced(
            "openai",
            json!({"gen_ai.request.model": "my-finetune", "gen_ai.usage.input_tokens": 5}),
            None,
        );
        assert_eq!(
            call.attribute(attr::OBSERVER_COST_UNKNOWN),
            Some(&json!("no price for openai model my-finetune"))
        );
        assert!(call.attribute(attr::OBSERVER_COST_USD).is_none());
        let call = priced("openai", json!({"gen_ai.request.model": "gpt-4o"}), None);
        assert_eq!(
            call.attribute(attr::OBSERVER_COST_UNKNOWN),
            Some(&json!("no token usage"))
        );
        let user = PriceTable::parse(
            "[[price]]\nproviders = [\"*\"]\nmodels = [\"my-*\", \"gpt-4o\"]\ninput = 1.0\noutput = 2.0\n",
        )
        .unwrap();
        let call = priced(
            "openai",
            json!({"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1_000_000,
                "gen_ai.usage.output_tokens": 1_000_000}),
            Some(&user),
        );
        assert!((usd(&call) - 3.0).abs() < 1e-9);
        assert!(
            PriceTable::parse("[[price]]\nproviders=[]\nmodels=[]\ninput=-1.0\noutput=0.0")
                .is_err()
        );
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("gpt-4o*", "gpt-4o-2024-08-06"));
        assert!(wildcard_match("gpt-4o*", "gpt-4o"));
        assert!(!wildcard_match("gpt-4o*", "chatgpt-4o"));
        assert!(wildcard_match(
            "*claude-3-haiku*",
            "anthropic.claude-3-haiku-20240307-v1:0"
        ));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*b*c", "a-x-b-y-c"));
        assert!(!wildcard_match("a*b*c", "a-x-c-y-b"));
        assert!(!wildcard_match("ab*ba", "aba"));
        assert!(wildcard_match("exact", "exact"));
        assert!(!wildcard_match("exact", "exact-not"));
    }
}

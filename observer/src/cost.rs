//! What a call cost, estimated from list prices: `observer.cost.usd`, which `observer show`
//! and `observer traces` add up. Cache discounts and batch prices are left out, so it is an
//! upper estimate; models not listed get no cost rather than a guess.

/// USD per million tokens, (input, output), by model name prefix; the longest prefix wins
/// (`gpt-4o-mini-2024-07-18` is `gpt-4o-mini`, not `gpt-4o`).
const PRICES: &[(&str, f64, f64)] = &[
    ("gpt-5-nano", 0.05, 0.40),
    ("gpt-5-mini", 0.25, 2.00),
    ("gpt-5", 1.25, 10.00),
    ("gpt-4.1-nano", 0.10, 0.40),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("gpt-4.1", 2.00, 8.00),
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-4o", 2.50, 10.00),
    ("gpt-4-turbo", 10.00, 30.00),
    ("gpt-4", 30.00, 60.00),
    ("gpt-3.5-turbo", 0.50, 1.50),
    ("o4-mini", 1.10, 4.40),
    ("o3-mini", 1.10, 4.40),
    ("o3", 2.00, 8.00),
    ("o1-mini", 1.10, 4.40),
    ("o1", 15.00, 60.00),
    ("text-embedding-3-small", 0.02, 0.0),
    ("text-embedding-3-large", 0.13, 0.0),
    ("text-embedding-ada-002", 0.10, 0.0),
    ("claude-opus-4-5", 5.00, 25.00),
    ("claude-opus", 15.00, 75.00),
    ("claude-3-opus", 15.00, 75.00),
    ("claude-sonnet", 3.00, 15.00),
    ("claude-3-7-sonnet", 3.00, 15.00),
    ("claude-3-5-sonnet", 3.00, 15.00),
    ("claude-haiku", 1.00, 5.00),
    ("claude-3-5-haiku", 0.80, 4.00),
    ("claude-3-haiku", 0.25, 1.25),
    ("gemini-2.5-pro", 1.25, 10.00),
    ("gemini-2.5-flash-lite", 0.10, 0.40),
    ("gemini-2.5-flash", 0.30, 2.50),
    ("gemini-2.0-flash", 0.10, 0.40),
    ("gemini-1.5-pro", 1.25, 5.00),
    ("gemini-1.5-flash", 0.075, 0.30),
];

/// The estimated cost in USD of a call to `model` with these token counts, if the model is
/// priced and at least one count is known.
pub fn estimate(model: &str, input_tokens: Option<u64>, output_tokens: Option<u64>) -> Option<f64> {
    if input_tokens.is_none() && output_tokens.is_none() {
        return None;
    }
    let model = model.to_ascii_lowercase();
    // Bedrock and Vertex put a vendor before the name: `us.anthropic.claude-…`,
    // `publishers/google/models/gemini-…`; so the name may start after any '.' or '/'.
    let names: Vec<&str> = std::iter::once(model.as_str())
        .chain(
            model
                .match_indices(['.', '/'])
                .map(|(at, _)| &model[at + 1..]),
        )
        .collect();
    let (_, input_price, output_price) = PRICES
        .iter()
        .filter(|(prefix, _, _)| names.iter().any(|name| name.starts_with(prefix)))
        .max_by_key(|(prefix, _, _)| prefix.len())?;
    let tokens = |count: Option<u64>| count.unwrap_or(0) as f64 / 1e6;
    Some(tokens(input_tokens) * input_price + tokens(output_tokens) * output_price)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_prices_the_call() {
        let cost = |model| estimate(model, Some(1_000_000), Some(100_000));
        assert_eq!(cost("gpt-4o-2024-08-06"), Some(2.5 + 1.0));
        assert_eq!(cost("gpt-4o-mini-2024-07-18"), Some(0.15 + 0.06));
        assert_eq!(cost("claude-sonnet-4-5-20250929"), Some(3.0 + 1.5));
        assert_eq!(
            cost("us.anthropic.claude-3-haiku-20240307-v1:0"),
            Some(0.25 + 0.125)
        );
        assert_eq!(cost("gpt-4.1-mini"), Some(0.4 + 0.16));
        assert_eq!(cost("some-local-model"), None);
        assert_eq!(estimate("gpt-4o", None, None), None);
    }
}

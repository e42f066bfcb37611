//! Pure parts of the canary's judgement: which sampled answers are degenerate, the KL estimate,
//! and which measurements regressed (each named with both numbers, for the rejection reason).

use clawline_schemas::{CanaryResult, DegenerateShares};

/// The text marks of broken language in one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Degenerate {
    pub repetition: bool,
    pub special_tokens: bool,
    pub control_chars: bool,
    pub replacement_chars: bool,
    pub cut_off: bool,
}

impl Degenerate {
    /// `special`: the added special tokens' texts (`<|im_start|>` …), besides any `<|…|>`.
    pub fn of(text: &str, cut_off: bool, special: &[String]) -> Self {
        Self {
            repetition: repeats(text),
            special_tokens: has_markup(text) || special.iter().any(|s| text.contains(s.as_str())),
            control_chars: text
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r')),
            replacement_chars: text.contains('\u{FFFD}'),
            cut_off,
        }
    }
}

/// `<|` followed later by `|>`: chat markup as text.
fn has_markup(text: &str) -> bool {
    text.find("<|")
        .is_some_and(|start| text[start + 2..].contains("|>"))
}

/// A sentence said twice, or a word 3-gram repeated within one sentence (lowercase, words are
/// runs of letters, digits and apostrophes). Corpus-style answers have neither; "Anything else.
/// Anything else." and "help help help help" have one.
pub fn repeats(text: &str) -> bool {
    let mut seen_sentences = std::collections::HashSet::new();
    for sentence in text.split(['.', '!', '?', '\n']) {
        let words: Vec<String> = sentence
            .split(|c: char| !(c.is_alphanumeric() || c == '\''))
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        if words.is_empty() {
            continue;
        }
        if !seen_sentences.insert(words.join(" ")) {
            return true;
        }
        let mut grams = std::collections::HashSet::new();
        if words.windows(3).any(|g| !grams.insert(g)) {
            return true;
        }
    }
    false
}

/// The share of `answers` with each mark.
pub fn shares(answers: &[Degenerate]) -> DegenerateShares {
    let n = answers.len().max(1) as f64;
    let share = |f: fn(&Degenerate) -> bool| answers.iter().filter(|a| f(a)).count() as f64 / n;
    DegenerateShares {
        repetition: share(|a| a.repetition),
        special_tokens: share(|a| a.special_tokens),
        control_chars: share(|a| a.control_chars),
        replacement_chars: share(|a| a.replacement_chars),
        cut_off: share(|a| a.cut_off),
    }
}

/// Per-token KL(serving ‖ candidate) on tokens the serving version sampled: the mean of the k3
/// estimator `exp(d) − d − 1`, `d = logp_candidate − logp_serving` (unbiased, never negative; the
/// trainer's KL metric uses the same). Returns the estimate and the token count.
pub fn kl_k3(serving: &[Vec<f32>], candidate: &[Vec<f32>]) -> (f64, usize) {
    let mut sum = 0.0;
    let mut n = 0usize;
    for (s, c) in serving.iter().zip(candidate) {
        for (&s, &c) in s.iter().zip(c) {
            let d = f64::from(c) - f64::from(s);
            sum += d.exp() - d - 1.0;
            n += 1;
        }
    }
    (if n == 0 { 0.0 } else { sum / n as f64 }, n)
}

/// How many standard errors of sampling noise a rise in a degenerate share must be to count.
/// Each share is over `prompts × samples` sampled answers (32 by default), so a share moves by
/// ±0.1 between versions that speak alike (measured: the cut-off share of near-identical versions
/// 0.50–0.84); five shares are compared for every version, some 250 comparisons in an hour of
/// training. At 3 standard errors a version that speaks like its parent is rejected by chance
/// about once in 700 comparisons; a version with broken language (0.5 of its answers against
/// 0.03) is 4 and more.
pub const MIN_STANDARD_ERRORS: f64 = 3.0;

/// The rise from share `s` to share `c`, each over `n` answers, in standard errors of the
/// difference of two shares (pooled two-proportion z statistic). 0 when there is no rise.
pub fn standard_errors(c: f64, s: f64, n: f64) -> f64 {
    if c.is_nan() || s.is_nan() {
        return f64::NAN;
    }
    let pooled = (c + s) / 2.0;
    let se = (pooled * (1.0 - pooled) * 2.0 / n.max(1.0)).sqrt();
    if c <= s || se == 0.0 {
        0.0
    } else {
        (c - s) / se
    }
}

/// `value` is at most `limit` (false for NaN).
fn within(value: f64, limit: f64) -> bool {
    value <= limit
}

/// Everything in `result` that regressed past its limit, each named with both numbers. Empty:
/// the candidate may be promoted. A measurement that is not a number (NaN weights) regresses.
pub fn regressions(result: &CanaryResult) -> Vec<String> {
    let mut out = Vec::new();
    let serving = format!("serving v{}'s", result.serving_version);
    let reward_drop = result.serving_reward - result.candidate_reward;
    if !within(reward_drop, result.tolerance) {
        out.push(format!(
            "mean reward {:.4} vs {serving} {:.4} ({:+.4}, tolerance {})",
            result.candidate_reward, result.serving_reward, -reward_drop, result.tolerance
        ));
    }
    let Some(q) = &result.quality else {
        return out;
    };
    let rise = q.candidate_nll - q.serving_nll;
    if !within(rise, q.max_nll_increase) {
        out.push(format!(
            "reference NLL {:.2} vs {serving} {:.2} ({rise:+.2} > {:.2} nats/token)",
            q.candidate_nll, q.serving_nll, q.max_nll_increase
        ));
    }
    if !within(q.kl, q.max_kl) {
        out.push(format!(
            "KL to {serving} answers {:.3} > {:.3} nats/token",
            q.kl, q.max_kl
        ));
    }
    if let (Some(c), Some(b), Some(max)) =
        (q.candidate_fluency, q.base_fluency, q.max_fluency_increase)
        && !within(c - b, max)
    {
        out.push(format!(
            "cross-entropy of its next tokens to the starting model {c:.2} vs the starting model's entropy {b:.2} ({:+.2} > {max:.2} nats/token: its language drifted)",
            c - b
        ));
    }
    let (c, s) = (&q.candidate_degenerate, &q.serving_degenerate);
    let answers = f64::from(result.prompts);
    for (name, c, s) in [
        ("repetition", c.repetition, s.repetition),
        ("special-token markup", c.special_tokens, s.special_tokens),
        ("control characters", c.control_chars, s.control_chars),
        ("U+FFFD", c.replacement_chars, s.replacement_chars),
        ("cut off at the token limit", c.cut_off, s.cut_off),
    ] {
        let z = standard_errors(c, s, answers);
        if !within(c - s, q.max_degenerate_increase) && !within(z, MIN_STANDARD_ERRORS) {
            out.push(format!(
                "answers with {name} {c:.2} vs {serving} {s:.2} ({:+.2} > {:.2}, {z:.1} standard errors)",
                c - s,
                q.max_degenerate_increase
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use clawline_schemas::CanaryQuality;

    use super::*;

    #[test]
    fn corpus_style_answers_are_not_degenerate() {
        let special = vec!["<|im_start|>".to_string()];
        for text in [
            "Great question, here is what I found. Tell me a little more about a travel plan and I will suggest a plan. Tell me if you want more detail.",
            "Here is a good plan. Tell me a little more about a recipe and I will suggest a plan. Tell me if you want more detail.",
            "The box holds 8 x 38 = 304. Then 304 - 23 = 281. The answer is 281.",
            "Hello Ana!\nSure, happy\tto help.",
        ] {
            assert_eq!(
                Degenerate::of(text, false, &special),
                Degenerate::default(),
                "{text}"
            );
        }
    }

    #[test]
    fn broken_answers_are_caught() {
        let special = vec!["<|im_start|>".to_string()];
        let of = |t: &str| Degenerate::of(t, false, &special);
        assert!(
            of("Greatu I cannot do a recipe. hope. Anything else. Anything else. Thanks")
                .repetition
        );
        assert!(of("help help help help").repetition);
        assert!(of("Sure <|im_start|>assistant").special_tokens);
        assert!(of("Sure <|tool|> x").special_tokens);
        assert!(!of("a <| b").special_tokens);
        assert!(of("Sure\u{7} happy").control_chars);
        assert!(of("Sure \u{FFFD}").replacement_chars);
        assert!(Degenerate::of("Sure", true, &special).cut_off);
        let s = shares(&[
            of("help help help help"),
            of("fine."),
            of("ok"),
            of("x\u{7}"),
        ]);
        assert_eq!(
            (s.repetition, s.control_chars, s.cut_off),
            (0.25, 0.25, 0.0)
        );
    }

    #[test]
    fn kl_is_zero_for_the_same_logprobs_and_grows_with_the_gap() {
        let s = vec![vec![-1.0f32, -2.0], vec![-0.5]];
        assert_eq!(kl_k3(&s, &s), (0.0, 3));
        let c = vec![vec![-3.0f32, -2.0], vec![-0.5]];
        let (kl, n) = kl_k3(&s, &c);
        assert!(
            (kl - ((-2f64).exp() + 1.0) / 3.0).abs() < 1e-9 && n == 3,
            "{kl}"
        );
    }

    fn result() -> CanaryResult {
        CanaryResult {
            prompts: 32,
            candidate_reward: 0.6,
            serving_reward: 0.5,
            serving_version: 3,
            tolerance: 0.02,
            quality: Some(CanaryQuality {
                candidate_nll: 2.45,
                serving_nll: 2.40,
                reference_tokens: 900,
                max_nll_increase: 0.1,
                kl: 0.05,
                kl_tokens: 700,
                max_kl: 0.1,
                max_degenerate_increase: 0.1,
                candidate_fluency: Some(1.0),
                base_fluency: Some(0.9),
                max_fluency_increase: Some(0.3),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn each_regression_is_named_with_both_numbers() {
        assert!(regressions(&result()).is_empty());
        let mut r = result();
        r.candidate_reward = 0.4;
        let q = r.quality.as_mut().unwrap_or_else(|| unreachable!());
        q.candidate_nll = 2.91;
        q.kl = 0.83;
        q.candidate_fluency = Some(1.5);
        q.candidate_degenerate.repetition = 0.5;
        q.serving_degenerate.repetition = 0.03;
        assert_eq!(
            regressions(&r),
            [
                "mean reward 0.4000 vs serving v3's 0.5000 (-0.1000, tolerance 0.02)",
                "reference NLL 2.91 vs serving v3's 2.40 (+0.51 > 0.10 nats/token)",
                "KL to serving v3's answers 0.830 > 0.100 nats/token",
                "cross-entropy of its next tokens to the starting model 1.50 vs the starting model's entropy 0.90 (+0.60 > 0.30 nats/token: its language drifted)",
                "answers with repetition 0.50 vs serving v3's 0.03 (+0.47 > 0.10, 4.3 standard errors)",
            ]
        );
    }

    #[test]
    fn a_rise_in_degenerate_answers_within_sampling_noise_is_not_a_regression() {
        // Measured in a plain-client run: versions that speak alike, 32 answers each, cut off at
        // the token limit 0.50 (a low draw, kept as the serving version's) against 0.62–0.84.
        let mut r = result();
        let q = r.quality.as_mut().unwrap_or_else(|| unreachable!());
        q.serving_degenerate.cut_off = 0.5;
        q.candidate_degenerate.cut_off = 0.72;
        assert!(regressions(&r).is_empty(), "{:?}", regressions(&r));
        // The same rise over 320 answers is no longer noise.
        r.prompts = 320;
        assert_eq!(regressions(&r).len(), 1, "{:?}", regressions(&r));
        // Broken language: a quarter of the answers with control characters, none before.
        let mut r = result();
        let q = r.quality.as_mut().unwrap_or_else(|| unreachable!());
        q.candidate_degenerate.control_chars = 0.25;
        assert_eq!(
            regressions(&r),
            [
                "answers with control characters 0.25 vs serving v3's 0.00 (+0.25 > 0.10, 3.0 standard errors)"
            ]
        );
        assert!((standard_errors(0.25, 0.0, 32.0) - 3.02).abs() < 0.01);
        assert_eq!(standard_errors(0.1, 0.3, 32.0), 0.0);
        assert!(standard_errors(f64::NAN, 0.0, 32.0).is_nan());
    }

    #[test]
    fn not_a_number_regresses() {
        let mut r = result();
        if let Some(q) = r.quality.as_mut() {
            q.candidate_nll = f64::NAN;
            q.kl = f64::NAN;
        }
        assert_eq!(regressions(&r).len(), 2, "{:?}", regressions(&r));
    }
}

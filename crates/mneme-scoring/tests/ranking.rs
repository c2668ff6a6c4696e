//! Table-driven ranking tests: each case renders its ranked list as text.

use mneme_scoring::{Calibration, DAY_MS, MemorySignals, MemoryType, ScoringParams, rank, score};

const NOW: i64 = 1_800_000_000_000;

struct Case {
    content: &'static str,
    memory_type: MemoryType,
    cosine: f32,
    age_days: f64,
    access_count: u64,
    pinned: bool,
}

fn case(content: &'static str, memory_type: MemoryType, cosine: f32, age_days: f64) -> Case {
    Case {
        content,
        memory_type,
        cosine,
        age_days,
        access_count: 0,
        pinned: false,
    }
}

fn render(cases: &[Case], calibration: &Calibration) -> String {
    let params = ScoringParams::default();
    let mut scored: Vec<_> = cases
        .iter()
        .map(|c| {
            let memory = MemorySignals {
                updated_at_ms: NOW - (c.age_days * DAY_MS) as i64,
                access_count: c.access_count,
                last_accessed_at_ms: if c.access_count > 0 { NOW } else { 0 },
                pinned: c.pinned,
                ..MemorySignals::new(c.memory_type, NOW)
            };
            (
                c.content,
                score(&params, calibration, c.cosine, &memory, NOW),
            )
        })
        .collect();
    rank(&mut scored);
    scored
        .iter()
        .map(|(content, s)| format!("{:.2} {content}\n", s.confidence))
        .collect()
}

#[test]
fn canonical_example_ranks_the_relevant_fact_first_with_minilm_cosines() {
    // all-MiniLM-L6-v2 cosines to "how should I write my responses?".
    let cases = [
        case("User is on the Pro plan", MemoryType::Semantic, 0.074, 0.0),
        case(
            "User prefers formal tone",
            MemoryType::Semantic,
            0.2507,
            0.0,
        ),
        case(
            "Last deployment was on March 10",
            MemoryType::Episodic,
            -0.0501,
            0.0,
        ),
    ];
    // The shipped MiniLM curve (fitted on held-out data) ranks them the same way, lower.
    let shipped = render(&cases, &Calibration::MINILM);
    let order: Vec<&str> = shipped.lines().map(|l| &l[5..]).collect();
    assert_eq!(
        order,
        [
            "User prefers formal tone",
            "User is on the Pro plan",
            "Last deployment was on March 10"
        ]
    );
    let text = render(&cases, &Calibration::PARAPHRASE_REFERENCE);
    assert_eq!(
        text,
        "0.63 User prefers formal tone\n\
         0.04 User is on the Pro plan\n\
         0.00 Last deployment was on March 10\n"
    );
}

#[test]
fn an_old_relevant_fact_beats_a_fresh_irrelevant_event() {
    let cases = [
        case("Deployed build 4411 today", MemoryType::Episodic, 0.05, 0.0),
        case(
            "The API key lives in vault/prod",
            MemoryType::Semantic,
            0.45,
            900.0,
        ),
        case(
            "Run make release to cut a release",
            MemoryType::Procedural,
            0.30,
            200.0,
        ),
    ];
    assert_eq!(
        render(&cases, &Calibration::PARAPHRASE_REFERENCE),
        "0.99 The API key lives in vault/prod\n\
         0.76 Run make release to cut a release\n\
         0.02 Deployed build 4411 today\n"
    );
}

#[test]
fn recency_and_reinforcement_break_ties_between_equally_similar_memories() {
    let mut often = case("Standup is at 9:30", MemoryType::Episodic, 0.3, 3.0);
    often.access_count = 12;
    let mut pinned = case("Never deploy on Fridays", MemoryType::Episodic, 0.3, 60.0);
    pinned.pinned = true;
    let cases = [
        case(
            "Standup moved to 10:00 last month",
            MemoryType::Episodic,
            0.3,
            30.0,
        ),
        often,
        pinned,
    ];
    assert_eq!(
        render(&cases, &Calibration::PARAPHRASE_REFERENCE),
        "0.77 Standup is at 9:30\n\
         0.75 Never deploy on Fridays\n\
         0.64 Standup moved to 10:00 last month\n"
    );
}

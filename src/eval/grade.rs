//! Graders for MMVP multiple-choice answers: they turn an MLLM's free-form response into the
//! option letter it chose (`exact_letter`, `rules`), or build and read the yes/no question that
//! the MMVP paper put to GPT-4 (`judge_prompt`, `parse_judge`). Everything here is a pure
//! function of strings, so graders can be rerun over saved responses without any model.
//!
//! The hard part is the English article: a case-insensitive search for the letter `a` finds
//! "A red door is open." and "It is a closed door". No rule here reads a bare `a`/`A` that is
//! followed by a word as option (a), unless that word begins option (a)'s own text.

use std::collections::BTreeSet;
use std::str::FromStr;

/// Which grader produced a choice; recorded in outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Grader {
    /// The response must be a bare option letter (`exact_letter`).
    Exact,
    /// The rule cascade over free text (`rules`).
    Rules,
    /// An LLM judge asked whether the response matches the answer (`judge_prompt`).
    Judge,
}

impl Grader {
    /// Every grader, in the order error messages list them.
    pub const ALL: [Grader; 3] = [Grader::Exact, Grader::Rules, Grader::Judge];

    /// The name written to the tables and accepted on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Grader::Exact => "exact",
            Grader::Rules => "rules",
            Grader::Judge => "judge",
        }
    }
}

impl FromStr for Grader {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Grader::ALL
            .into_iter()
            .find(|g| g.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| {
                let names: Vec<&str> = Grader::ALL.iter().map(|g| g.name()).collect();
                format!(
                    "unknown grader {wanted:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// One option of a question: its letter ('a', 'b', ...) and text ("Open").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The option's letter, lower-case.
    pub letter: char,
    /// The option's text, with runs of whitespace collapsed to one space.
    pub text: String,
}

/// Splits "(a) Open (b) Closed" into choices; tolerates "(A)", "a)", "A.", newlines, extra spaces; returns an error string when fewer than 2 options are found.
pub fn parse_options(options: &str) -> Result<Vec<Choice>, String> {
    let t: Vec<char> = options.chars().collect();
    // "(x)" markers are unambiguous; bare "x)"/"x." markers are only a fallback because
    // option texts such as "Mr. B. Smith" could contain them.
    let mut markers = option_markers(&t, true);
    if markers.len() < 2 {
        markers = option_markers(&t, false);
    }
    if markers.len() < 2 {
        return Err(format!(
            "found {} option(s) where at least two like \"(a) Open (b) Closed\" were expected",
            markers.len()
        ));
    }
    Ok(markers
        .iter()
        .enumerate()
        .map(|(k, &(letter, _, end))| {
            let stop = markers.get(k + 1).map_or(t.len(), |m| m.1);
            let raw: String = t[end..stop].iter().collect();
            let text = raw.split_whitespace().collect::<Vec<_>>().join(" ");
            let text = text.trim_end_matches([',', ';']).trim_end().to_string();
            Choice { letter, text }
        })
        .collect())
}

/// "(a)", "a", "A", "(A) Open" -> Some('a') when it names one of `choices`.
pub fn parse_answer(answer: &str, choices: &[Choice]) -> Option<char> {
    let s = answer.trim();
    let t: Vec<char> = s.chars().collect();
    let letter = match t.as_slice() {
        ['(', x, ')', ..] => Some(*x),
        [x] | [x, ')' | '.' | ':', ..] => Some(*x),
        _ => None,
    };
    if let Some(letter) = letter.and_then(|x| valid(x, choices)) {
        return Some(letter);
    }
    // Some hand-made sheets write the option's text instead of its letter.
    let folded = s.split_whitespace().collect::<Vec<_>>().join(" ");
    choices
        .iter()
        .find(|c| !c.text.is_empty() && c.text.eq_ignore_ascii_case(&folded))
        .map(|c| c.letter.to_ascii_lowercase())
}

/// Exact grader: the trimmed response (less one trailing period) is "X", "(X)", "X)" or "X." for a valid letter X, any case.
pub fn exact_letter(response: &str, choices: &[Choice]) -> Option<char> {
    let s = response.trim();
    let s = s.strip_suffix('.').unwrap_or(s).trim_end();
    let t: Vec<char> = s.chars().collect();
    match t.as_slice() {
        [x] | ['(', x, ')'] | [x, ')' | '.'] => valid(*x, choices),
        _ => None,
    }
}

/// Rule cascade: the first rule that decides wins; returns the chosen letter or None (no answer / ambiguous).
///
/// The response is first stripped of Markdown emphasis (`*`, `` ` ``) and lower-cased; then:
///
/// 1. **Exact**: `exact_letter` accepts the whole response ("B", "(b)", "**B**").
/// 2. **Answer markers**: a letter right after "answer", "option" or "choice" (optionally
///    through ":", "-", quotes and filler words such as "is", "would be", "the question"):
///    "Answer: B", "the answer is (b)", "the correct option is B", "option (b)". Markers
///    with "answer", or "option"/"choice" after "correct", "right", "best" or "final", are
///    strong; a bare "option (b)" is weak. One distinct strong letter wins; with no strong
///    marker, one distinct weak letter wins; disagreement falls through.
/// 3. **Parenthesised letters**: exactly one distinct valid letter written "(x)" anywhere.
///    A response that repeats the options ("(a) Open (b) Closed") falls through.
/// 4. **Leading letters**: a letter form at the start of a line ("B.", "B)", "B:", "B -",
///    "b,", "B" alone), exactly one distinct letter over all lines, and no other letter
///    written as an option label ("c)", "(c)") anywhere.
/// 5. **Option text**: each option's text as whole words, case-insensitive. A match inside a
///    longer option's match ("facing the camera" inside "not facing the camera") is dropped,
///    and so is a match right after a negation ("not", "no", "never", "isn't", ...). Exactly
///    one option left wins.
/// 6. Otherwise None.
///
/// Throughout, a standalone letter must be followed by the end, punctuation or a line break;
/// "a"/"A" (and "i"/"o", also English words) followed by a space and a word is read as the
/// article unless that word begins the letter's own option text ("answer: a closed door" is
/// not option (a)). Other letters may be followed by a word ("B because the door is shut").
pub fn rules(response: &str, choices: &[Choice]) -> Option<char> {
    let plain: String = response
        .chars()
        .filter(|c| !matches!(c, '*' | '`'))
        .collect();
    if let Some(letter) = exact_letter(&plain, choices) {
        return Some(letter);
    }
    let t = lower(&plain);
    let words = words(&t);
    marked_letter(&t, &words, choices)
        .or_else(|| parenthesised_letter(&t, choices))
        .or_else(|| leading_letter(&t, choices))
        .or_else(|| option_text(&words, &t, choices))
}

/// The prompt for the LLM judge in the protocol of the MMVP paper (GPT-4 asked whether a free-form response matches the correct answer, reply "yes" or "no").
///
/// The paper's grader sent its system line and then "Given the following question {prompt},
/// the correct answer is {answer}. Does the following answer correctly answers the question,
/// answer:{response}?", where the prompt held the question and its options and the answer
/// was the sheet's "(a)". Its wording, grammar included, is kept so that judge scores stay
/// comparable with the paper's; the system line leads because our chat clients send one
/// user message.
pub fn judge_prompt(question: &str, options: &str, correct: &str, response: &str) -> String {
    let prompt = format!("{} {}", question.trim(), options.trim());
    format!(
        "You are a helpful and precise assistant for checking the quality of the answer. \
         Please answer in only yes or no.\n\n\
         Given the following question {}, the correct answer is {}. Does the following \
         answer correctly answers the question, answer:{}?",
        prompt.trim(),
        correct.trim(),
        response.trim()
    )
}

/// Reads the judge's reply: Some(true) for yes, Some(false) for no, None when neither (e.g. "Yes." / "no, because..." / "**Yes**" handled; "I cannot tell" -> None).
pub fn parse_judge(reply: &str) -> Option<bool> {
    let t = lower(reply);
    let words = words(&t);
    let verdict = |w: &str| match w {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    };
    // The first word is the verdict when the judge obeyed; otherwise accept a reply that says
    // exactly one of yes/no somewhere ("The answer is yes."), and nothing that says both.
    if let Some(v) = words.first().and_then(|w| verdict(&w.text)) {
        return Some(v);
    }
    let said: BTreeSet<bool> = words.iter().filter_map(|w| verdict(&w.text)).collect();
    match said.len() {
        1 => said.into_iter().next(),
        _ => None,
    }
}

/// Words that negate the option text right after them (rule 5).
const NEGATIONS: [&str; 12] = [
    "not", "no", "never", "neither", "nor", "isn't", "aren't", "wasn't", "weren't", "doesn't",
    "don't", "didn't",
];

/// Words that turn a following "option"/"choice" into a strong marker (rule 2).
const STRENGTHENERS: [&str; 6] = ["correct", "right", "best", "final", "true", "my"];

/// Words skipped between a marker and its letter (rule 2); they make an article possible.
const FILLERS: [&str; 16] = [
    "is",
    "was",
    "be",
    "would",
    "should",
    "will",
    "must",
    "seems",
    "likely",
    "probably",
    "clearly",
    "therefore",
    "to",
    "the",
    "this",
    "question",
];

/// Letters that are also one-letter English words, so they need care when a word follows.
const WORD_LETTERS: [char; 3] = ['a', 'i', 'o'];

/// A word of a lower-cased text: its char span and its text (curly apostrophes made straight).
struct Word {
    start: usize,
    end: usize,
    text: String,
}

/// The options' markers as (letter, start, end) char positions, lettered a, b, c, ... in order.
fn option_markers(t: &[char], parenthesised: bool) -> Vec<(char, usize, usize)> {
    let mut markers = Vec::new();
    let mut from = 0;
    for expected in 'a'..='z' {
        let at = (from..t.len()).find(|&i| {
            let is = |k: usize, c: char| t.get(k) == Some(&c);
            let letter_at = |k: usize| t.get(k).is_some_and(|c| c.to_ascii_lowercase() == expected);
            if parenthesised {
                is(i, '(') && letter_at(i + 1) && is(i + 2, ')')
            } else {
                (i == 0 || t[i - 1].is_whitespace())
                    && letter_at(i)
                    && (is(i + 1, ')') || is(i + 1, '.'))
                    && t.get(i + 2).is_none_or(|c| c.is_whitespace())
            }
        });
        let Some(i) = at else { break };
        let end = if parenthesised { i + 3 } else { i + 2 };
        markers.push((expected, i, end));
        from = end;
    }
    markers
}

/// The lower-case letter when `c` is the letter of one of `choices`.
fn valid(c: char, choices: &[Choice]) -> Option<char> {
    let l = c.to_ascii_lowercase();
    (c.is_ascii_alphabetic() && choices.iter().any(|ch| ch.letter.to_ascii_lowercase() == l))
        .then_some(l)
}

/// Lower-cases char by char, so that positions in the result are positions in the input.
fn lower(s: &str) -> Vec<char> {
    s.chars()
        .map(|c| {
            let mut l = c.to_lowercase();
            match (l.next(), l.next()) {
                (Some(one), None) => one,
                _ => c,
            }
        })
        .collect()
}

fn is_apostrophe(c: char) -> bool {
    c == '\'' || c == '’'
}

/// Runs of letters and digits, keeping apostrophes inside words ("isn't", "butterfly's").
fn words(t: &[char]) -> Vec<Word> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        if !t[i].is_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while i < t.len()
            && (t[i].is_alphanumeric()
                || (is_apostrophe(t[i]) && t.get(i + 1).is_some_and(|c| c.is_alphanumeric())))
        {
            i += 1;
        }
        let text = t[start..i]
            .iter()
            .map(|&c| if is_apostrophe(c) { '\'' } else { c })
            .collect();
        out.push(Word {
            start,
            end: i,
            text,
        });
    }
    out
}

/// The words of a string, lower-cased.
fn word_texts(s: &str) -> Vec<String> {
    words(&lower(s)).into_iter().map(|w| w.text).collect()
}

/// The option letter written standalone at `t[i]` ("(b)", "b", "b.", "b)", "b:", "b -").
///
/// `article_ok` says whether an article could stand here; where it could, a word letter
/// followed by a space and a word counts only if that word begins the letter's option text.
fn letter_at(t: &[char], i: usize, choices: &[Choice], article_ok: bool) -> Option<char> {
    // A letter glued to a word, or to the apostrophe of "it's", is part of that word.
    let glued = match i {
        0 => false,
        1 => t[0].is_alphanumeric(),
        _ => t[i - 1].is_alphanumeric() || (is_apostrophe(t[i - 1]) && t[i - 2].is_alphanumeric()),
    };
    if glued {
        return None;
    }
    let c = *t.get(i)?;
    if c == '(' {
        return match (t.get(i + 1), t.get(i + 2)) {
            (Some(&x), Some(')')) => valid(x, choices),
            _ => None,
        };
    }
    let letter = valid(c, choices)?;
    let not_word_after = |k: usize| t.get(k).is_none_or(|c| !c.is_alphanumeric());
    match t.get(i + 1) {
        None => Some(letter),
        Some(')' | ':' | ',' | ';' | '!' | '?' | ']') => Some(letter),
        // "a.m.", "A.I." and "A's" are not letters.
        Some(&n) if n == '.' || n == '"' || n == '”' || is_apostrophe(n) => {
            not_word_after(i + 2).then_some(letter)
        }
        Some(w) if w.is_whitespace() => {
            let Some(j) = (i + 1..t.len()).find(|&j| !t[j].is_whitespace()) else {
                return Some(letter);
            };
            if t[i + 1..j].contains(&'\n') || "-–—(:=".contains(t[j]) {
                return Some(letter);
            }
            if !article_ok || !WORD_LETTERS.contains(&letter) {
                return Some(letter);
            }
            let own = choices
                .iter()
                .find(|ch| ch.letter.to_ascii_lowercase() == letter)
                .map(|ch| word_texts(&ch.text))
                .unwrap_or_default();
            let rest = words(&t[j..]);
            let begins_own = !own.is_empty()
                && rest.len() >= own.len()
                && rest.iter().zip(&own).all(|(r, o)| &r.text == o);
            begins_own.then_some(letter)
        }
        _ => None,
    }
}

/// Rule 2: the letter after an explicit answer marker.
fn marked_letter(t: &[char], words: &[Word], choices: &[Choice]) -> Option<char> {
    let mut strong = BTreeSet::new();
    let mut weak = BTreeSet::new();
    for (k, w) in words.iter().enumerate() {
        let is_strong = match w.text.as_str() {
            "answer" => true,
            "option" | "choice" => k > 0 && STRENGTHENERS.contains(&words[k - 1].text.as_str()),
            _ => continue,
        };
        // "answer a question" has an article after it; "option a" cannot.
        let mut article_ok = w.text == "answer";
        let mut p = w.end;
        let mut next = k + 1;
        loop {
            while p < t.len() && (t[p].is_whitespace() || ":-–—=\"'“”‘’[".contains(t[p]))
            {
                p += 1;
            }
            let Some(word) = words.get(next).filter(|x| x.start == p) else {
                break;
            };
            match word.text.as_str() {
                "option" | "choice" | "letter" => article_ok = false,
                f if FILLERS.contains(&f) => article_ok = true,
                _ => break,
            }
            p = word.end;
            next += 1;
        }
        if let Some(letter) = letter_at(t, p, choices, article_ok) {
            if is_strong {
                strong.insert(letter);
            } else {
                weak.insert(letter);
            }
        }
    }
    match (strong.len(), weak.len()) {
        (1, _) => strong.into_iter().next(),
        (0, 1) => weak.into_iter().next(),
        _ => None,
    }
}

/// Rule 3: the one valid letter written in parentheses.
fn parenthesised_letter(t: &[char], choices: &[Choice]) -> Option<char> {
    let seen: BTreeSet<char> = t
        .windows(3)
        .filter(|w| w[0] == '(' && w[2] == ')')
        .filter_map(|w| valid(w[1], choices))
        .collect();
    single(seen)
}

/// Rule 4: the one letter that starts lines, when no other letter is written as a label.
fn leading_letter(t: &[char], choices: &[Choice]) -> Option<char> {
    let mut seen = BTreeSet::new();
    let mut line_start = true;
    for (i, &c) in t.iter().enumerate() {
        if c == '\n' {
            line_start = true;
        } else if line_start && !c.is_whitespace() {
            line_start = false;
            // Parenthesised letters were rule 3's to decide.
            if c != '(' {
                seen.extend(letter_at(t, i, choices, true));
            }
        }
    }
    let letter = single(seen)?;
    // "a) Open b) Closed" repeats the options on one line.
    let labelled = (0..t.len()).any(|i| {
        t.get(i + 1) == Some(&')')
            && (i == 0 || !t[i - 1].is_alphanumeric())
            && valid(t[i], choices).is_some_and(|l| l != letter)
    });
    (!labelled).then_some(letter)
}

/// Rule 5: the one option whose text the response says, longest match first, negations out.
fn option_text(words: &[Word], t: &[char], choices: &[Choice]) -> Option<char> {
    // (choice index, first word, one past the last word)
    let mut hits = Vec::new();
    for (ci, ch) in choices.iter().enumerate() {
        let needle = word_texts(&ch.text);
        if needle.is_empty() || needle.len() > words.len() {
            continue;
        }
        for s in 0..=words.len() - needle.len() {
            if words[s..s + needle.len()]
                .iter()
                .zip(&needle)
                .all(|(w, n)| &w.text == n)
            {
                hits.push((ci, s, s + needle.len()));
            }
        }
    }
    let kept: BTreeSet<char> = hits
        .iter()
        .filter(|&&(ci, s, e)| {
            !hits
                .iter()
                .any(|&(cj, s2, e2)| cj != ci && s2 <= s && e <= e2 && e2 - s2 > e - s)
        })
        .filter(|&&(_, s, _)| {
            // Only a negation in the same phrase counts: "No, open" is not "not open".
            s == 0
                || !(NEGATIONS.contains(&words[s - 1].text.as_str())
                    && t[words[s - 1].end..words[s].start]
                        .iter()
                        .all(|c| c.is_whitespace()))
        })
        .map(|&(ci, _, _)| choices[ci].letter.to_ascii_lowercase())
        .collect();
    single(kept)
}

/// The element of a one-element set.
fn single(set: BTreeSet<char>) -> Option<char> {
    match set.len() {
        1 => set.into_iter().next(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_CLOSED: &str = "(a) Open (b) Closed";
    const YES_NO: &str = "(a) Yes (b) No";

    fn opts(s: &str) -> Vec<Choice> {
        parse_options(s).unwrap()
    }

    #[test]
    fn grader_names_round_trip() {
        for g in Grader::ALL {
            assert_eq!(g.name().parse::<Grader>(), Ok(g));
        }
        assert_eq!("Rules".parse::<Grader>(), Ok(Grader::Rules));
        let err = "gpt".parse::<Grader>().unwrap_err();
        assert!(err.contains("exact, rules, judge"), "{err}");
    }

    #[test]
    fn parse_options_two() {
        assert_eq!(
            opts(OPEN_CLOSED),
            vec![
                Choice {
                    letter: 'a',
                    text: "Open".into()
                },
                Choice {
                    letter: 'b',
                    text: "Closed".into()
                },
            ]
        );
        let yn = opts(YES_NO);
        assert_eq!((yn[0].text.as_str(), yn[1].text.as_str()), ("Yes", "No"));
    }

    #[test]
    fn parse_options_three_and_more() {
        let c = opts("(a) One (b) Two (c) Three (d) Four or more");
        let got: Vec<(char, &str)> = c.iter().map(|c| (c.letter, c.text.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ('a', "One"),
                ('b', "Two"),
                ('c', "Three"),
                ('d', "Four or more")
            ]
        );
    }

    #[test]
    fn parse_options_odd_spacing_newlines_and_case() {
        let c = opts("  (A)   Facing   left\n(B)\tFacing right  ");
        assert_eq!(c[0].text, "Facing left");
        assert_eq!(c[1].text, "Facing right");
        assert_eq!((c[0].letter, c[1].letter), ('a', 'b'));
        let c = opts("(a)Open(b)Closed");
        assert_eq!((c[0].text.as_str(), c[1].text.as_str()), ("Open", "Closed"));
        let c = opts("(a) Yes, (b) No");
        assert_eq!(c[0].text, "Yes");
    }

    #[test]
    fn parse_options_bare_markers() {
        let c = opts("a) Open b) Closed");
        assert_eq!((c[0].text.as_str(), c[1].text.as_str()), ("Open", "Closed"));
        let c = opts("A. A red car\nB. A blue car");
        assert_eq!(
            (c[0].text.as_str(), c[1].text.as_str()),
            ("A red car", "A blue car")
        );
        // Inside a parenthesised sheet, a bare "b." in a text is not a marker.
        let c = opts("(a) Plan b. (b) Plan c.");
        assert_eq!(c[0].text, "Plan b.");
    }

    #[test]
    fn parse_options_rejects_fewer_than_two() {
        assert!(parse_options("(a) Open").is_err());
        assert!(parse_options("Open or closed").is_err());
        assert!(parse_options("").is_err());
        // Letters must start at (a) and run in order.
        assert!(parse_options("(b) Open (c) Closed").is_err());
    }

    #[test]
    fn parse_answer_forms() {
        let c = opts(OPEN_CLOSED);
        for (answer, want) in [
            ("(a)", Some('a')),
            ("a", Some('a')),
            ("A", Some('a')),
            ("(A) Open", Some('a')),
            (" (b) ", Some('b')),
            ("b)", Some('b')),
            ("B.", Some('b')),
            ("Closed", Some('b')),
            ("(c)", None),
            ("", None),
            ("A dog", None),
        ] {
            assert_eq!(parse_answer(answer, &c), want, "{answer:?}");
        }
    }

    /// (response, options, under `rules`, under `exact_letter`).
    const CASES: &[(&str, &str, Option<char>, Option<char>)] = &[
        ("(a)", OPEN_CLOSED, Some('a'), Some('a')),
        ("a", OPEN_CLOSED, Some('a'), Some('a')),
        ("A.", OPEN_CLOSED, Some('a'), Some('a')),
        ("B", OPEN_CLOSED, Some('b'), Some('b')),
        ("b)", OPEN_CLOSED, Some('b'), Some('b')),
        ("  (B).\n", OPEN_CLOSED, Some('b'), Some('b')),
        ("C", OPEN_CLOSED, None, None),
        ("(b) Closed", OPEN_CLOSED, Some('b'), None),
        ("(A) Open", OPEN_CLOSED, Some('a'), None),
        ("The answer is (b).", OPEN_CLOSED, Some('b'), None),
        ("Answer: B", OPEN_CLOSED, Some('b'), None),
        ("ANSWER: A", OPEN_CLOSED, Some('a'), None),
        ("**B**", OPEN_CLOSED, Some('b'), None),
        ("Final answer: **B**", OPEN_CLOSED, Some('b'), None),
        ("B) Closed", OPEN_CLOSED, Some('b'), None),
        ("B. The door is closed.", OPEN_CLOSED, Some('b'), None),
        ("A: the door is wide open", OPEN_CLOSED, Some('a'), None),
        ("b, the door is shut", OPEN_CLOSED, Some('b'), None),
        ("B - Closed", OPEN_CLOSED, Some('b'), None),
        ("B!", OPEN_CLOSED, Some('b'), None),
        ("The door is open.", OPEN_CLOSED, Some('a'), None),
        ("The door is closed.", OPEN_CLOSED, Some('b'), None),
        ("THE DOOR IS CLOSED!!", OPEN_CLOSED, Some('b'), None),
        ("It is a closed door.", OPEN_CLOSED, Some('b'), None),
        // The article must not pick (a), whose text here is "Closed".
        ("A red door is open.", "(a) Closed (b) Open", Some('b'), None),
        ("A dog is facing left.", "(a) Right (b) Left", Some('b'), None),
        ("The answer is a closed door.", OPEN_CLOSED, Some('b'), None),
        ("Answer: a closed door", OPEN_CLOSED, Some('b'), None),
        ("To answer a question like this, look at the hinge. It is open.", OPEN_CLOSED, Some('a'), None),
        ("The image shows a cat.", "(a) Dog (b) Bird", None, None),
        ("There is a dog", "(a) Cat (b) Bird", None, None),
        (
            "There is a butterfly on the flower, so the answer is yes",
            YES_NO,
            Some('a'),
            None,
        ),
        ("Yes, the butterfly's wings are open.", YES_NO, Some('a'), None),
        ("No, there is no butterfly in the image.", YES_NO, Some('b'), None),
        ("a) Yes", YES_NO, Some('a'), None),
        ("I can't determine", OPEN_CLOSED, None, None),
        ("I can't determine that from the image.", YES_NO, None, None),
        ("(a) Open (b) Closed", OPEN_CLOSED, None, None),
        ("a) Open b) Closed", OPEN_CLOSED, None, None),
        (
            "Option (b): the school bus is facing left",
            "(a) Facing right (b) Facing left",
            Some('b'),
            None,
        ),
        ("option A is correct", OPEN_CLOSED, Some('a'), None),
        ("The correct option is B", OPEN_CLOSED, Some('b'), None),
        ("The answer is B because the door is shut.", OPEN_CLOSED, Some('b'), None),
        (
            "Option (a) would mean the door is open, option (b) that it is shut. The answer is (b).",
            OPEN_CLOSED,
            Some('b'),
            None,
        ),
        (
            "The dog is not facing the camera",
            "(a) Facing the camera (b) Not facing the camera",
            Some('b'),
            None,
        ),
        (
            "The dog is facing the camera.",
            "(a) Facing the camera (b) Not facing the camera",
            Some('a'),
            None,
        ),
        ("The door is not open.", "(a) Open (b) Shut", None, None),
        ("The door is open, not closed.", OPEN_CLOSED, Some('a'), None),
        ("It is neither open nor closed.", OPEN_CLOSED, None, None),
        ("The door is open. Or maybe closed.", OPEN_CLOSED, None, None),
        (
            "Looking at the image carefully, the door is shut.\n\nAnswer: B",
            OPEN_CLOSED,
            Some('b'),
            None,
        ),
        ("The answer is:\nA", OPEN_CLOSED, Some('a'), None),
        ("A\nThe door stands open.", OPEN_CLOSED, Some('a'), None),
        ("A. Open\nB. Closed", OPEN_CLOSED, None, None),
        ("There are 3 apples.", "(a) 2 (b) 3 (c) 4", Some('b'), None),
        ("The answer is (c) 4.", "(a) 2 (b) 3 (c) 4", Some('c'), None),
        ("A.I. can't tell.", OPEN_CLOSED, None, None),
        ("The best choice is \"B\".", OPEN_CLOSED, Some('b'), None),
    ];

    #[test]
    fn response_table() {
        assert!(CASES.len() >= 40);
        for &(response, options, want_rules, want_exact) in CASES {
            let c = opts(options);
            assert_eq!(rules(response, &c), want_rules, "rules on {response:?}");
            assert_eq!(
                exact_letter(response, &c),
                want_exact,
                "exact on {response:?}"
            );
        }
    }

    #[test]
    fn exact_accepts_only_letter_forms() {
        let c = opts(OPEN_CLOSED);
        for s in ["a", "(a)", "a)", "a.", "A", "(A).", " \n(a)\t"] {
            assert_eq!(exact_letter(s, &c), Some('a'), "{s:?}");
        }
        for s in ["a dog", "(a", "a))", "Answer: a", "", "aa", "(c)"] {
            assert_eq!(exact_letter(s, &c), None, "{s:?}");
        }
    }

    #[test]
    fn judge_prompt_follows_the_paper() {
        let p = judge_prompt(
            "Is the door open?",
            OPEN_CLOSED,
            "(a)",
            "The door is closed.",
        );
        assert!(p.contains("Given the following question Is the door open? (a) Open (b) Closed,"));
        assert!(p.contains("the correct answer is (a)."));
        assert!(p.contains("answer:The door is closed.?"));
        assert!(p.contains("yes or no"));
    }

    proptest::proptest! {
        #[test]
        fn rules_never_panics_and_names_an_option(response in "\\PC{0,80}") {
            let c = opts("(a) Open (b) Closed (c) Ajar");
            if let Some(l) = rules(&response, &c) {
                proptest::prop_assert!(['a', 'b', 'c'].contains(&l));
            }
            let _ = exact_letter(&response, &c);
            let _ = parse_judge(&response);
        }

        #[test]
        fn article_never_reads_as_option_a(
            first in proptest::sample::select(vec!["A", "a"]),
            rest in proptest::collection::vec(
                proptest::sample::select(vec![
                    "red", "door", "dog", "is", "on", "the", "left", "with", "a cat",
                    "near a", "image", "shows", "it", "there", "looks like", ".", ",",
                    "\nA dog", "\na cat", "A.I.", "a.m.",
                ]),
                1..12,
            ),
        ) {
            // Neither option texts nor answer markers occur in the vocabulary, so only a misread
            // article could decide.
            let c = opts(OPEN_CLOSED);
            let response = format!("{first} {} {}", "dog", rest.join(" "));
            proptest::prop_assert_eq!(rules(&response, &c), None, "{:?}", response);
        }
    }

    #[test]
    fn parse_judge_table() {
        for (reply, want) in [
            ("yes", Some(true)),
            ("Yes.", Some(true)),
            ("**Yes**", Some(true)),
            ("YES", Some(true)),
            ("  yes, the response says open", Some(true)),
            ("no", Some(false)),
            ("No.", Some(false)),
            ("no, because the response picks (b)", Some(false)),
            ("The answer is yes.", Some(true)),
            ("I cannot tell", None),
            ("Yesterday", None),
            ("Not sure", None),
            ("", None),
            ("I would say yes or no", None),
        ] {
            assert_eq!(parse_judge(reply), want, "{reply:?}");
        }
    }
}

//! Line diffs for `--dry-run` output (publish and sync): hunks of removed
//! and added lines with their line numbers, unified style, no context.
//!
//! The edit script comes from the `similar` crate (Myers' algorithm with
//! its own heuristics for large inputs), not a home-made LCS: one diff for
//! every dry run, and repeated lines are counted as the lines they are.

use similar::{ChangeTag, TextDiff};
use std::fmt::Write as _;

/// The hunks turning `old` into `new`; empty when they are equal.
pub fn line_diff(old: &str, new: &str) -> String {
    let d = TextDiff::from_lines(old, new);
    let mut s = String::new();
    for group in d.grouped_ops(0) {
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            continue;
        };
        let o = first.old_range().start..last.old_range().end;
        let n = first.new_range().start..last.new_range().end;
        let _ = writeln!(
            s,
            "@@ -{},{} +{},{} @@",
            o.start + usize::from(!o.is_empty()),
            o.len(),
            n.start + usize::from(!n.is_empty()),
            n.len()
        );
        for op in &group {
            for c in d.iter_changes(op) {
                let mark = match c.tag() {
                    ChangeTag::Delete => '-',
                    ChangeTag::Insert => '+',
                    ChangeTag::Equal => continue,
                };
                let _ = writeln!(s, "{mark}{}", c.value().trim_end_matches('\n'));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::line_diff;

    #[test]
    fn hunks() {
        assert_eq!(line_diff("a\nb\nc\n", "a\nb\nc\n"), "");
        assert_eq!(
            line_diff("a\nb\nc\n", "a\nB\nc\n"),
            "@@ -2,1 +2,1 @@\n-b\n+B\n"
        );
        assert_eq!(line_diff("", "x\n"), "@@ -0,0 +1,1 @@\n+x\n");
        assert_eq!(line_diff("a\nx\nb\n", "a\nb\n"), "@@ -2,1 +1,0 @@\n-x\n");
    }

    /// A config whose new version repeats a line it already has: the old
    /// line-set diff reported nothing for the added copy.
    #[test]
    fn repeated_lines_count() {
        let old = "LABEL a\n  APPEND x\n";
        let new = "LABEL a\n  APPEND x\nLABEL b\n  APPEND x\n";
        assert_eq!(
            line_diff(old, new),
            "@@ -2,0 +3,2 @@\n+LABEL b\n+  APPEND x\n"
        );
        assert_eq!(
            line_diff(new, old),
            "@@ -3,2 +2,0 @@\n-LABEL b\n-  APPEND x\n"
        );
    }
}

"""The nouns: :class:`Parameter`, the trees and selections of them, tie groups, and the
planner every multi-parameter write goes through (check everything, then commit)."""

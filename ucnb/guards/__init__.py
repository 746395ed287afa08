"""Fail-first guards over the supported surface (seed: "Regression Guards"); rules are data."""

from __future__ import annotations

from ucnb.guards.profiles import ProfileCheck, check_profiles
from ucnb.guards.surface import Finding, Rule, RuleSet, load_rules, scan

__all__ = ["Finding", "ProfileCheck", "Rule", "RuleSet", "check_profiles", "load_rules", "scan"]

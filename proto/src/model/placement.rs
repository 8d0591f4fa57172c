//! Placement rules shared by jobs, groups and tasks: constraints, affinities
//! and spreads.

use serde::{Deserialize, Serialize};

use super::de::{null_default, null_default_vec};

/// A hard placement rule: only nodes where `LTarget <Operand> RTarget` holds
/// are eligible.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Constraint {
    /// Left operand, usually an interpolated node attribute such as
    /// `${attr.kernel.name}`.
    #[serde(deserialize_with = "null_default")]
    pub l_target: String,
    /// Right operand, a literal value.
    #[serde(deserialize_with = "null_default")]
    pub r_target: String,
    /// Comparison; one of
    /// [`CONSTRAINT_OPERANDS`](super::constants::CONSTRAINT_OPERANDS).
    #[serde(deserialize_with = "null_default")]
    pub operand: String,
}

/// A soft placement preference: nodes where `LTarget <Operand> RTarget`
/// holds score `Weight` higher (or lower, when negative).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Affinity {
    /// Left operand, usually an interpolated node attribute.
    #[serde(deserialize_with = "null_default")]
    pub l_target: String,
    /// Right operand, a literal value.
    #[serde(deserialize_with = "null_default")]
    pub r_target: String,
    /// Comparison; one of
    /// [`AFFINITY_OPERANDS`](super::constants::AFFINITY_OPERANDS).
    #[serde(deserialize_with = "null_default")]
    pub operand: String,
    /// Preference in `[-100, 100]`, non-zero.
    #[serde(deserialize_with = "null_default")]
    pub weight: i32,
}

/// Spread a group's allocations over the values of a node attribute.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Spread {
    /// The node attribute to spread over, e.g. `${node.datacenter}`.
    #[serde(deserialize_with = "null_default")]
    pub attribute: String,
    /// Importance relative to other spreads and affinities, in `[1, 100]`.
    #[serde(deserialize_with = "null_default")]
    pub weight: i32,
    /// Desired share of allocations per attribute value; when empty the
    /// allocations are spread evenly.
    #[serde(deserialize_with = "null_default_vec")]
    pub spread_target: Vec<SpreadTarget>,
}

/// The desired share of allocations for one attribute value of a [`Spread`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SpreadTarget {
    /// The attribute value.
    #[serde(deserialize_with = "null_default")]
    pub value: String,
    /// Percentage of the group's allocations wanted on nodes with `value`.
    #[serde(deserialize_with = "null_default")]
    pub percent: u32,
}

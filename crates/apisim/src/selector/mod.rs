//! Label and field selectors, as accepted by `?labelSelector=` and `?fieldSelector=` and as
//! stored in `metav1.LabelSelector` objects (Deployment, ReplicaSet, StatefulSet selectors).
//!
//! Everything here is pure: parsing never panics and never allocates more than a small
//! multiple of the input size, because the inputs come straight from untrusted query strings
//! and request bodies.

mod error;
mod field;
mod label;
mod parser;
mod requirement;
#[cfg(test)]
mod tests;
mod validate;

pub use error::SelectorError;
pub use field::{FieldRequirement, FieldSelector};
pub use label::{LabelSelector, labels_of};
pub use requirement::{Operator, Requirement};

//! Tests of the ingress router: unit tests per rule, property tests against
//! a naive reference matcher written here, independently of `routes.rs`.

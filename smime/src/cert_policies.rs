//! Certificate policies (RFC 5280 §6.1: the valid_policy_tree of §6.1.2 (a), §6.1.3 (d)–(f),
//! §6.1.4 (a)–(b), (h)–(j) and §6.1.5 (a)–(b), (g)).
//!
//! The inputs are [`PolicyInputs`]: the initial policy set (empty: anyPolicy), and whether an
//! explicit policy is required, policy mapping inhibited and anyPolicy inhibited. The
//! defaults accept any policy, as a mail client does; an organisation that only trusts
//! certificates issued under its policy names the policy OIDs.
//!
//! The tree is kept as an arena of nodes, one level per certificate. A hostile path (many
//! policies and mappings per CA, the shape behind OpenSSL's CVE-2023-0464) cannot make it
//! grow without bound: a certificate with more than [`MAX_POLICIES`] policies or mappings,
//! or a tree of more than [`MAX_NODES`] nodes, fails the check.
//! Qualifiers (CPS pointers, user notices) are not kept: nothing shows them.

use crate::path::CertEntry;
use der::asn1::ObjectIdentifier;
use std::collections::BTreeSet;
use x509_cert::ext::pkix::{
    CertificatePolicies, InhibitAnyPolicy, PolicyConstraints, PolicyMappings,
};

/// anyPolicy (RFC 5280 §4.2.1.4).
pub const ANY_POLICY: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.32.0");
/// Most policies (or mappings) one certificate may carry.
pub const MAX_POLICIES: usize = 64;
/// Most nodes of the tree for one path.
pub const MAX_NODES: usize = 1024;

/// The policy inputs of path validation (RFC 5280 §6.1.1 (c), (e)–(g)).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyInputs {
    /// user-initial-policy-set as dotted OIDs; empty means anyPolicy (every policy)
    pub policies: Vec<String>,
    /// initial-explicit-policy: the path must be valid for some policy of the set
    pub require_explicit_policy: bool,
    /// initial-policy-mapping-inhibit
    pub inhibit_policy_mapping: bool,
    /// initial-any-policy-inhibit
    pub inhibit_any_policy: bool,
}

impl PolicyInputs {
    /// Whether these are the defaults (any policy, nothing required or inhibited).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Checks the OIDs; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        self.initial_set().map(|_| ())
    }

    fn initial_set(&self) -> Result<BTreeSet<ObjectIdentifier>, String> {
        if self.policies.is_empty() {
            return Ok(BTreeSet::from([ANY_POLICY]));
        }
        self.policies
            .iter()
            .map(|p| {
                ObjectIdentifier::new(p.trim()).map_err(|_| {
                    format!("'{p}' is not a policy OID (dotted numbers, such as 2.5.29.32.0)")
                })
            })
            .collect()
    }
}

/// The outcome of [`check_path`].
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// the path is valid for these policies (authorities' and user's sets intersected);
    /// `["2.5.29.32.0"]` for any policy; empty when the tree is empty
    pub policies: Vec<String>,
    /// why the path fails, when it does
    pub problem: Option<String>,
}

#[derive(Clone, Debug)]
struct Node {
    policy: ObjectIdentifier,
    expected: BTreeSet<ObjectIdentifier>,
    parent: Option<usize>,
    depth: usize,
    alive: bool,
}

/// The valid_policy_tree: `None` once it is NULL.
struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    fn new() -> Self {
        Self {
            nodes: vec![Node {
                policy: ANY_POLICY,
                expected: BTreeSet::from([ANY_POLICY]),
                parent: None,
                depth: 0,
                alive: true,
            }],
        }
    }

    fn at(&self, depth: usize) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive && self.nodes[i].depth == depth)
            .collect()
    }

    fn add(
        &mut self,
        parent: usize,
        policy: ObjectIdentifier,
        expected: BTreeSet<ObjectIdentifier>,
    ) -> Result<(), String> {
        if self.nodes.len() >= MAX_NODES {
            return Err(format!(
                "the certificate policies of the path make more than {MAX_NODES} policy nodes: refused"
            ));
        }
        let depth = self.nodes[parent].depth + 1;
        self.nodes.push(Node {
            policy,
            expected,
            parent: Some(parent),
            depth,
            alive: true,
        });
        Ok(())
    }

    fn children(&self, parent: usize) -> impl Iterator<Item = &Node> {
        self.nodes
            .iter()
            .filter(move |n| n.alive && n.parent == Some(parent))
    }

    fn kill(&mut self, i: usize) {
        self.nodes[i].alive = false;
        // descendants go with it (a node always comes after its parent in the arena)
        for j in i + 1..self.nodes.len() {
            if let Some(p) = self.nodes[j].parent {
                if !self.nodes[p].alive {
                    self.nodes[j].alive = false;
                }
            }
        }
    }

    /// Deletes nodes above `depth` that have no children, from `depth - 1` up to the root.
    fn prune(&mut self, depth: usize) {
        for d in (0..depth).rev() {
            let mut has_child = vec![false; self.nodes.len()];
            for n in self.nodes.iter().filter(|n| n.alive) {
                if let Some(p) = n.parent {
                    has_child[p] = true;
                }
            }
            for (i, n) in self.nodes.iter_mut().enumerate() {
                if n.alive && n.depth == d && !has_child[i] {
                    n.alive = false;
                }
            }
        }
    }

    fn is_null(&self) -> bool {
        !self.nodes[0].alive
    }
}

/// The policy extensions of one certificate.
struct CertPolicyExts {
    policies: Option<Vec<ObjectIdentifier>>,
    mappings: Option<Vec<(ObjectIdentifier, ObjectIdentifier)>>,
    constraints: Option<PolicyConstraints>,
    inhibit_any: Option<u32>,
}

fn read_exts(c: &CertEntry) -> Result<CertPolicyExts, String> {
    let t = c.cert.tbs_certificate();
    let who = || c.subject();
    let policies = match t.get_extension::<CertificatePolicies>() {
        Ok(Some((_, p))) => {
            let ids: Vec<ObjectIdentifier> = p.0.iter().map(|i| i.policy_identifier).collect();
            if ids.len() > MAX_POLICIES {
                return Err(format!(
                    "'{}' asserts {} policies (at most {MAX_POLICIES} are processed): refused",
                    who(),
                    ids.len()
                ));
            }
            if ids.iter().collect::<BTreeSet<_>>().len() != ids.len() {
                return Err(format!(
                    "'{}' lists a certificate policy twice (RFC 5280 §4.2.1.4)",
                    who()
                ));
            }
            Some(ids)
        }
        Ok(None) => None,
        Err(e) => return Err(format!("'{}': unreadable certificatePolicies ({e})", who())),
    };
    let mappings = match t.get_extension::<PolicyMappings>() {
        Ok(Some((_, m))) => {
            if m.0.len() > MAX_POLICIES {
                return Err(format!(
                    "'{}' has {} policy mappings (at most {MAX_POLICIES} are processed): refused",
                    who(),
                    m.0.len()
                ));
            }
            Some(
                m.0.iter()
                    .map(|m| (m.issuer_domain_policy, m.subject_domain_policy))
                    .collect(),
            )
        }
        Ok(None) => None,
        Err(e) => return Err(format!("'{}': unreadable policyMappings ({e})", who())),
    };
    let constraints = match t.get_extension::<PolicyConstraints>() {
        Ok(c) => c.map(|(_, c)| c),
        Err(e) => return Err(format!("'{}': unreadable policyConstraints ({e})", who())),
    };
    let inhibit_any = match t.get_extension::<InhibitAnyPolicy>() {
        Ok(c) => c.map(|(_, c)| c.0),
        Err(e) => return Err(format!("'{}': unreadable inhibitAnyPolicy ({e})", who())),
    };
    Ok(CertPolicyExts {
        policies,
        mappings,
        constraints,
        inhibit_any,
    })
}

/// Whether any certificate of the path (anchor excluded) carries a policy extension.
pub fn path_has_policies(chain: &[&CertEntry]) -> bool {
    use der::oid::AssociatedOid;
    let ids = [
        CertificatePolicies::OID,
        PolicyMappings::OID,
        PolicyConstraints::OID,
        InhibitAnyPolicy::OID,
    ];
    chain[..chain.len().saturating_sub(1)].iter().any(|c| {
        c.cert
            .tbs_certificate()
            .extensions()
            .into_iter()
            .flatten()
            .any(|e| ids.contains(&e.extn_id))
    })
}

/// Runs RFC 5280 policy processing over `chain` (`[end entity, intermediates..., anchor]`,
/// a path already built; the anchor's own extensions are not processed).
pub fn check_path(chain: &[&CertEntry], inputs: &PolicyInputs) -> Outcome {
    match process(chain, inputs) {
        Ok(o) => o,
        Err(e) => Outcome {
            policies: Vec::new(),
            problem: Some(e),
        },
    }
}

fn process(chain: &[&CertEntry], inputs: &PolicyInputs) -> Result<Outcome, String> {
    let user_set = inputs.initial_set()?;
    // certificates 1..=n from the anchor down (RFC 5280 numbering)
    let certs: Vec<&CertEntry> = chain[..chain.len().saturating_sub(1)]
        .iter()
        .rev()
        .copied()
        .collect();
    let n = certs.len();
    let mut tree = Tree::new();
    let mut explicit = if inputs.require_explicit_policy {
        0
    } else {
        n + 1
    };
    let mut inhibit_any = if inputs.inhibit_any_policy { 0 } else { n + 1 };
    let mut mapping = if inputs.inhibit_policy_mapping {
        0
    } else {
        n + 1
    };
    for (idx, c) in certs.iter().enumerate() {
        let i = idx + 1;
        let exts = read_exts(c)?;
        let self_issued = c.is_self_issued();
        // §6.1.3 (d)-(e)
        match &exts.policies {
            Some(ps) if !tree.is_null() => {
                apply_policies(&mut tree, i, ps, inhibit_any > 0 || (i < n && self_issued))?;
            }
            Some(_) => {}
            None => tree.nodes[0].alive = false,
        }
        // (f)
        if explicit == 0 && tree.is_null() {
            return Ok(fail(format!(
                "'{}': no certificate policy is valid for the path here{}, and {}",
                c.subject(),
                if exts.policies.is_none() {
                    " (it has no certificatePolicies)"
                } else {
                    ""
                },
                required(&user_set)
            )));
        }
        if i == n {
            // §6.1.5 (a)-(b)
            explicit = explicit.saturating_sub(1);
            if exts
                .constraints
                .as_ref()
                .is_some_and(|pc| pc.require_explicit_policy == Some(0))
            {
                explicit = 0;
            }
            break;
        }
        // §6.1.4 (a)-(b)
        if let Some(maps) = &exts.mappings {
            if maps
                .iter()
                .any(|(a, b)| *a == ANY_POLICY || *b == ANY_POLICY)
            {
                return Ok(fail(format!(
                    "'{}' maps to or from anyPolicy (RFC 5280 §6.1.4 (a))",
                    c.subject()
                )));
            }
            if !tree.is_null() {
                apply_mappings(&mut tree, i, maps, mapping > 0)?;
            }
        }
        // (h)
        if !self_issued {
            explicit = explicit.saturating_sub(1);
            mapping = mapping.saturating_sub(1);
            inhibit_any = inhibit_any.saturating_sub(1);
        }
        // (i)-(j)
        if let Some(pc) = &exts.constraints {
            if let Some(r) = pc.require_explicit_policy {
                explicit = explicit.min(r as usize);
            }
            if let Some(m) = pc.inhibit_policy_mapping {
                mapping = mapping.min(m as usize);
            }
        }
        if let Some(s) = exts.inhibit_any {
            inhibit_any = inhibit_any.min(s as usize);
        }
    }
    // §6.1.5 (g): intersect with the user's set
    let valid = intersect(&mut tree, n, &user_set)?;
    if explicit == 0 && valid.is_empty() {
        return Ok(fail(format!(
            "the path is valid for no certificate policy of the set, and {}",
            required(&user_set)
        )));
    }
    Ok(Outcome {
        policies: valid.iter().map(|o| o.to_string()).collect(),
        problem: None,
    })
}

/// What is required, said for an error.
fn required(user_set: &BTreeSet<ObjectIdentifier>) -> String {
    if user_set.contains(&ANY_POLICY) {
        "an explicit policy is required (by a CA's policyConstraints or the trust policy)"
            .to_string()
    } else {
        format!(
            "the trust policy requires one of {}",
            user_set
                .iter()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

fn fail(problem: String) -> Outcome {
    Outcome {
        policies: Vec::new(),
        problem: Some(problem),
    }
}

/// §6.1.3 (d) (1)-(3) for certificate `i` with policies `ps`; `any_allowed`: its anyPolicy
/// is processed (inhibit_anyPolicy > 0, or a self-issued intermediate).
fn apply_policies(
    tree: &mut Tree,
    i: usize,
    ps: &[ObjectIdentifier],
    any_allowed: bool,
) -> Result<(), String> {
    let parents = tree.at(i - 1);
    for p in ps.iter().filter(|p| **p != ANY_POLICY) {
        let matching: Vec<usize> = parents
            .iter()
            .copied()
            .filter(|&q| tree.nodes[q].expected.contains(p))
            .collect();
        let targets = if matching.is_empty() {
            parents
                .iter()
                .copied()
                .filter(|&q| tree.nodes[q].policy == ANY_POLICY)
                .collect()
        } else {
            matching
        };
        for q in targets {
            tree.add(q, *p, BTreeSet::from([*p]))?;
        }
    }
    if any_allowed && ps.contains(&ANY_POLICY) {
        for q in parents {
            let have: BTreeSet<ObjectIdentifier> = tree.children(q).map(|c| c.policy).collect();
            let missing: Vec<ObjectIdentifier> = tree.nodes[q]
                .expected
                .iter()
                .filter(|e| !have.contains(*e))
                .copied()
                .collect();
            for e in missing {
                tree.add(q, e, BTreeSet::from([e]))?;
            }
        }
    }
    tree.prune(i);
    Ok(())
}

/// §6.1.4 (b) for certificate `i` with `maps` (issuerDomainPolicy, subjectDomainPolicy).
fn apply_mappings(
    tree: &mut Tree,
    i: usize,
    maps: &[(ObjectIdentifier, ObjectIdentifier)],
    allowed: bool,
) -> Result<(), String> {
    let issuer_policies: BTreeSet<ObjectIdentifier> = maps.iter().map(|(a, _)| *a).collect();
    for idp in issuer_policies {
        let subjects: BTreeSet<ObjectIdentifier> = maps
            .iter()
            .filter(|(a, _)| *a == idp)
            .map(|(_, b)| *b)
            .collect();
        let level = tree.at(i);
        let with: Vec<usize> = level
            .iter()
            .copied()
            .filter(|&k| tree.nodes[k].policy == idp)
            .collect();
        if allowed {
            if with.is_empty() {
                let any_parents: Vec<usize> = level
                    .iter()
                    .filter(|&&k| tree.nodes[k].policy == ANY_POLICY)
                    .filter_map(|&k| tree.nodes[k].parent)
                    .collect();
                for q in any_parents {
                    tree.add(q, idp, subjects.clone())?;
                }
            } else {
                for k in with {
                    tree.nodes[k].expected = subjects.clone();
                }
            }
        } else {
            for k in with {
                tree.kill(k);
            }
            tree.prune(i);
        }
    }
    Ok(())
}

/// §6.1.5 (g): the tree intersected with `user_set`; returns the policies the path is valid
/// for (the valid policies of the leaves at depth `n`; anyPolicy alone for any).
fn intersect(
    tree: &mut Tree,
    n: usize,
    user_set: &BTreeSet<ObjectIdentifier>,
) -> Result<BTreeSet<ObjectIdentifier>, String> {
    if tree.is_null() || n == 0 {
        return Ok(if tree.is_null() {
            BTreeSet::new()
        } else {
            BTreeSet::from([ANY_POLICY])
        });
    }
    if !user_set.contains(&ANY_POLICY) {
        // valid_policy_node_set: nodes whose parent is an anyPolicy node
        let node_set: Vec<usize> = (0..tree.nodes.len())
            .filter(|&k| {
                let nd = &tree.nodes[k];
                nd.alive
                    && nd.policy != ANY_POLICY
                    && nd
                        .parent
                        .is_some_and(|p| tree.nodes[p].policy == ANY_POLICY)
            })
            .collect();
        let present: BTreeSet<ObjectIdentifier> =
            node_set.iter().map(|&k| tree.nodes[k].policy).collect();
        for &k in &node_set {
            if !user_set.contains(&tree.nodes[k].policy) {
                tree.kill(k);
            }
        }
        let any_leaf: Option<usize> = tree
            .at(n)
            .into_iter()
            .find(|&k| tree.nodes[k].policy == ANY_POLICY);
        if let Some(a) = any_leaf {
            if let Some(parent) = tree.nodes[a].parent {
                for p in user_set.iter().filter(|p| !present.contains(*p)) {
                    tree.add(parent, *p, BTreeSet::from([*p]))?;
                }
            }
            tree.kill(a);
        }
        tree.prune(n);
    }
    if tree.is_null() {
        return Ok(BTreeSet::new());
    }
    let leaves: BTreeSet<ObjectIdentifier> = tree
        .at(n)
        .into_iter()
        .map(|k| tree.nodes[k].policy)
        .collect();
    Ok(if leaves.contains(&ANY_POLICY) {
        BTreeSet::from([ANY_POLICY])
    } else {
        leaves
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_validate_their_oids() {
        assert!(PolicyInputs::default().is_default());
        let bad = PolicyInputs {
            policies: vec!["1.2.x".into()],
            ..Default::default()
        };
        assert!(bad.validate().expect_err("bad oid").contains("1.2.x"));
        let good = PolicyInputs {
            policies: vec!["2.16.840.1.101.3.2.1.48.1".into()],
            ..Default::default()
        };
        assert!(good.validate().is_ok());
    }

    #[test]
    fn the_tree_is_bounded() {
        let mut t = Tree::new();
        let p = ObjectIdentifier::new_unwrap("1.2.3");
        let mut last = Ok(());
        for _ in 0..MAX_NODES + 1 {
            last = t.add(0, p, BTreeSet::from([p]));
            if last.is_err() {
                break;
            }
        }
        assert!(last.expect_err("bounded").contains("policy nodes"));
    }
}

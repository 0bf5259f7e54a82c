//! The permission algorithm: the single code path every REST call and (later) every extension
//! call goes through.
//!
//! 1. Administrators (members of `Administrators`, directly or not) and the system pass.
//! 2. Visibility: the entity must exist and be visible to one of the caller's organizations,
//!    else the answer is `404 Entity Not Found`, indistinguishable from a missing entity.
//! 3. The grants that apply are collected: for design time, the entity's and its collection's;
//!    for run time on a Thing, the Thing's and the instance permissions of every template in its
//!    chain. Of the grants whose principal is the user or one of their groups and whose resource
//!    is `*` or the one asked: any Deny denies; else any Allow allows; else the default is deny.

use super::{Acl, DesignPerm, Principal, RunPerm, ADMINISTRATORS};
use crate::error::ApiError;
use crate::model::entities::{EntityKind, Member, PrincipalKind};
use crate::model::Model;
use std::collections::HashSet;

/// The outcome of weighing grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Allow,
    Deny,
    NoGrant,
}

/// Whether one of the caller's organizations is among `orgs`.
fn sees(who: &Principal, orgs: Option<&std::collections::BTreeSet<String>>) -> bool {
    orgs.is_some_and(|o| o.iter().any(|org| who.orgs.contains(org)))
}

fn weigh(decisions: impl Iterator<Item = bool>) -> Decision {
    let mut d = Decision::NoGrant;
    for allow in decisions {
        if !allow {
            return Decision::Deny;
        }
        d = Decision::Allow;
    }
    d
}

impl Model {
    /// Resolves a user's groups and organizations.
    pub fn principal(&self, user: &str) -> Principal {
        let me = Member {
            kind: PrincipalKind::User,
            name: user.to_string(),
        };
        let groups = self.groups_of(&me);
        let orgs: HashSet<String> = self
            .orgs
            .iter()
            .filter(|(_, o)| {
                o.members.iter().any(|m| match m.kind {
                    PrincipalKind::User => m.name == user,
                    PrincipalKind::Group => groups.contains(&m.name),
                })
            })
            .map(|(n, _)| n.clone())
            .collect();
        Principal {
            admin: groups.contains(ADMINISTRATORS),
            name: user.to_string(),
            groups,
            orgs,
        }
    }

    fn acl(&self, kind: EntityKind, name: &str) -> Option<&Acl> {
        self.acl.get(&(kind, name.to_string()))
    }

    /// Whether the entity exists and the caller may see it.
    pub fn is_visible(&self, who: &Principal, kind: EntityKind, name: &str) -> bool {
        if !self.exists(kind, name) {
            return false;
        }
        if who.admin {
            return true;
        }
        match kind {
            EntityKind::Thing => {
                self.thing_visible_itself(who, name) || {
                    let template = self
                        .things
                        .get(name)
                        .map(|t| t.template.as_str())
                        .unwrap_or_default();
                    self.instances_visible(who, template)
                }
            }
            _ => {
                if self.acl(kind, name).and_then(|a| a.owner.as_deref()) == Some(who.name.as_str())
                {
                    return true;
                }
                match kind {
                    EntityKind::Resource | EntityKind::Collection => true,
                    EntityKind::User if name == who.name => true,
                    _ => sees(who, self.acl(kind, name).map(|a| &a.visibility)),
                }
            }
        }
    }

    /// A Thing's own part of visibility: its owner, or an organization granted on it.
    fn thing_visible_itself(&self, who: &Principal, name: &str) -> bool {
        let acl = self.acl(EntityKind::Thing, name);
        acl.and_then(|a| a.owner.as_deref()) == Some(who.name.as_str())
            || sees(who, acl.map(|a| &a.visibility))
    }

    /// A template's part: an organization granted instance visibility on it or on a base.
    fn instances_visible(&self, who: &Principal, template: &str) -> bool {
        self.template_chain(template).into_iter().any(|t| {
            sees(
                who,
                self.acl(EntityKind::ThingTemplate, t)
                    .map(|a| &a.instance_visibility),
            )
        })
    }

    /// [`Model::is_visible`] for many Things in one go (a listing): the same rule, with each
    /// template's instance visibility decided once.
    /// The closure takes a Thing of this model and its name.
    pub fn thing_visibility<'a>(
        &'a self,
        who: &'a Principal,
    ) -> impl FnMut(&str, &'a crate::model::entities::Thing) -> bool + 'a {
        let mut by_template: std::collections::HashMap<&'a str, bool> = Default::default();
        move |name: &str, thing: &'a crate::model::entities::Thing| {
            if who.admin || self.thing_visible_itself(who, name) {
                return true;
            }
            *by_template
                .entry(thing.template.as_str())
                .or_insert_with(|| self.instances_visible(who, &thing.template))
        }
    }

    /// `404 Entity Not Found` unless the entity exists and is visible to the caller.
    pub fn check_visible(
        &self,
        who: &Principal,
        kind: EntityKind,
        name: &str,
    ) -> Result<(), ApiError> {
        if self.is_visible(who, kind, name) {
            Ok(())
        } else {
            Err(ApiError::entity_not_found(name))
        }
    }

    /// Visibility, then a design-time permission on the entity (or its whole collection).
    pub fn check_design(
        &self,
        who: &Principal,
        kind: EntityKind,
        name: &str,
        perm: DesignPerm,
    ) -> Result<(), ApiError> {
        self.check_visible(who, kind, name)?;
        if who.admin || self.design_allowed(who, kind, Some(name), perm) {
            return Ok(());
        }
        Err(ApiError::not_authorized(perm.as_str(), name, name))
    }

    /// A design-time permission on a whole collection (e.g. `Create` on `Things`).
    pub fn check_collection(
        &self,
        who: &Principal,
        kind: EntityKind,
        perm: DesignPerm,
    ) -> Result<(), ApiError> {
        if who.admin || self.design_allowed(who, kind, None, perm) {
            return Ok(());
        }
        let c = kind.collection();
        Err(ApiError::not_authorized(perm.as_str(), c, c))
    }

    fn design_allowed(
        &self,
        who: &Principal,
        kind: EntityKind,
        name: Option<&str>,
        perm: DesignPerm,
    ) -> bool {
        let acl = name.and_then(|n| self.acl(kind, n));
        let owner = acl.and_then(|a| a.owner.as_deref()) == Some(who.name.as_str())
            && perm != DesignPerm::Create;
        let entity = acl.map(|a| a.design.as_slice());
        let collection = self
            .acl(EntityKind::Collection, kind.collection())
            .map(|a| a.design.as_slice());
        let grants = entity
            .unwrap_or_default()
            .iter()
            .chain(collection.unwrap_or_default())
            .filter(|g| g.perm == perm && who.is(&g.principal))
            .map(|g| g.allow)
            .chain(owner.then_some(true));
        weigh(grants) == Decision::Allow
    }

    /// Visibility, then a run-time permission on one resource (property, service, event) of a
    /// Thing (including its templates' instance permissions) or of a subsystem.
    pub fn check_runtime(
        &self,
        who: &Principal,
        kind: EntityKind,
        name: &str,
        perm: RunPerm,
        resource: &str,
    ) -> Result<(), ApiError> {
        self.check_visible(who, kind, name)?;
        if who.admin || self.runtime_allowed(who, kind, name, perm, resource) {
            return Ok(());
        }
        Err(ApiError::not_authorized(perm.as_str(), resource, name))
    }

    /// Whether a run-time permission is granted (the caller is assumed to see the entity).
    pub fn runtime_allowed(
        &self,
        who: &Principal,
        kind: EntityKind,
        name: &str,
        perm: RunPerm,
        resource: &str,
    ) -> bool {
        if who.admin {
            return true;
        }
        let mut acls: Vec<&Acl> = self.acl(kind, name).into_iter().collect();
        if kind == EntityKind::Thing {
            if let Some(t) = self.things.get(name) {
                acls.extend(
                    self.template_chain(&t.template)
                        .into_iter()
                        .filter_map(|tpl| self.acl(EntityKind::ThingTemplate, tpl)),
                );
            }
        }
        let grants = acls
            .iter()
            .flat_map(|a| a.runtime.iter())
            .filter(|g| {
                g.perm == perm
                    && (g.resource == "*" || g.resource == resource)
                    && who.is(&g.principal)
            })
            .map(|g| g.allow);
        weigh(grants) == Decision::Allow
    }
}

#[cfg(test)]
mod tests;

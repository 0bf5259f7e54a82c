//! Who is calling, and what they may do.
//!
//! [`Principal`] is the resolved caller (user, transitive groups, organizations); [`Acl`] is what
//! is granted on one entity; [`permissions`] holds the one algorithm every API and extension
//! call goes through; [`secrets`] hashes passwords and application keys.

pub mod hasher;
pub mod permissions;
pub mod secrets;
pub mod sessions;
pub mod vault;

use crate::model::entities::{Member, PrincipalKind};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};

/// The group whose members bypass every permission check.
pub const ADMINISTRATORS: &str = "Administrators";
/// The group every user joins when created.
pub const USERS: &str = "Users";
/// The organization that contains the `Users` group.
pub const EVERYONE: &str = "Everyone";
/// The bootstrap administrator.
pub const ADMINISTRATOR: &str = "Administrator";
/// The name under which the platform itself acts (extension internals, bootstrap).
pub const SYSTEM: &str = "System";

/// Design-time permission types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DesignPerm {
    Create,
    Read,
    Update,
    Delete,
}

/// Run-time permission types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunPerm {
    PropertyRead,
    PropertyWrite,
    ServiceInvoke,
    EventInvoke,
    EventSubscribe,
}

impl DesignPerm {
    pub const ALL: [DesignPerm; 4] = [
        DesignPerm::Create,
        DesignPerm::Read,
        DesignPerm::Update,
        DesignPerm::Delete,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            DesignPerm::Create => "Create",
            DesignPerm::Read => "Read",
            DesignPerm::Update => "Update",
            DesignPerm::Delete => "Delete",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl RunPerm {
    pub const ALL: [RunPerm; 5] = [
        RunPerm::PropertyRead,
        RunPerm::PropertyWrite,
        RunPerm::ServiceInvoke,
        RunPerm::EventInvoke,
        RunPerm::EventSubscribe,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            RunPerm::PropertyRead => "PropertyRead",
            RunPerm::PropertyWrite => "PropertyWrite",
            RunPerm::ServiceInvoke => "ServiceInvoke",
            RunPerm::EventInvoke => "EventInvoke",
            RunPerm::EventSubscribe => "EventSubscribe",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesignGrant {
    pub perm: DesignPerm,
    pub principal: Member,
    pub allow: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunGrant {
    pub perm: RunPerm,
    /// `*` or the name of one property, service or event.
    pub resource: String,
    pub principal: Member,
    pub allow: bool,
}

/// Everything granted on one entity (or collection).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Acl {
    #[serde(default)]
    pub design: Vec<DesignGrant>,
    /// On a Thing: its own run-time permissions; on a Thing Template: instance permissions
    /// inherited by every Thing of the template and of templates derived from it.
    #[serde(default)]
    pub runtime: Vec<RunGrant>,
    /// Organizations whose members see the entity.
    #[serde(default)]
    pub visibility: BTreeSet<String>,
    /// On a Thing Template: organizations whose members see every Thing of the template.
    #[serde(default)]
    pub instance_visibility: BTreeSet<String>,
    /// The user who created the entity: they always see it and hold design-time Read, Update
    /// and Delete on it (unless explicitly denied), so they can share it further.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl Acl {
    pub fn is_empty(&self) -> bool {
        self.owner.is_none()
            && self.design.is_empty()
            && self.runtime.is_empty()
            && self.visibility.is_empty()
            && self.instance_visibility.is_empty()
    }
    /// Drops every grant to `principal` (when the user or group is deleted).
    pub fn forget_principal(&mut self, principal: &Member) -> bool {
        let before = self.design.len() + self.runtime.len();
        self.design.retain(|g| &g.principal != principal);
        self.runtime.retain(|g| &g.principal != principal);
        before != self.design.len() + self.runtime.len()
    }
}

/// An authenticated caller with its memberships resolved.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    /// Every group the user belongs to, directly or through other groups.
    pub groups: HashSet<String>,
    /// Every organization the user belongs to, directly or through a group.
    pub orgs: HashSet<String>,
    pub admin: bool,
}

impl Principal {
    /// The platform acting for itself: passes every check.
    pub fn system() -> Self {
        Self {
            name: SYSTEM.to_string(),
            groups: HashSet::new(),
            orgs: HashSet::new(),
            admin: true,
        }
    }

    /// Whether a grant to `m` applies to this caller.
    pub fn is(&self, m: &Member) -> bool {
        match m.kind {
            PrincipalKind::User => m.name == self.name,
            PrincipalKind::Group => self.groups.contains(&m.name),
        }
    }
}

//! A server with `ConnectionServicesExtension` imported, a device user with an application key,
//! and RemoteThings that user may bind: the setup of every device-connectivity test.

use crate::packages::{connection_services_package, upload};
use crate::wait::wait_until;
use crate::{Client, Server, ServerOptions};
use serde_json::json;
use std::time::Duration;

/// The device user's name.
pub const DEVICE_USER: &str = "device";

pub struct Fleet {
    pub server: Server,
    pub admin: Client,
    /// The application key of [`DEVICE_USER`].
    pub key: String,
}

impl Fleet {
    pub async fn start(things: &[&str]) -> Fleet {
        Self::start_with(ServerOptions::default(), things).await
    }

    pub async fn start_with(opts: ServerOptions, things: &[&str]) -> Fleet {
        let server = Server::start(opts);
        let admin = server.admin();
        let r = upload(&admin, connection_services_package()).await.ok();
        assert_eq!(r.rows()[0]["extensionReportStatus"], json!(0), "{}", r.text);
        admin
            .create_user(DEVICE_USER, "Device-Password-1")
            .await
            .ok();
        let key = admin.new_app_key("device-key", DEVICE_USER).await;
        for t in things {
            add_device(&admin, t).await;
        }
        Fleet { server, admin, key }
    }

    /// `http://ADDR` of the server (follows restarts).
    pub fn url(&self) -> String {
        self.server.base_url()
    }
}

/// A RemoteThing the device user may see and whose properties it may write.
pub async fn add_device(admin: &Client, thing: &str) {
    admin.create_thing(thing, "RemoteThing").await.ok();
    admin
        .grant_visibility("Things", thing, "Everyone")
        .await
        .ok();
    admin
        .grant_runtime(
            "Things",
            thing,
            "PropertyWrite",
            "*",
            DEVICE_USER,
            "User",
            true,
        )
        .await
        .ok();
}

pub async fn is_connected(admin: &Client, thing: &str) -> bool {
    admin.get_property(thing, "isConnected").await.ok().row()["isConnected"] == json!(true)
}

/// Waits until `thing.isConnected == want`.
pub async fn wait_connected(admin: &Client, thing: &str, want: bool, within: Duration) {
    wait_until(
        within,
        &format!("{thing}.isConnected == {want}"),
        || async { is_connected(admin, thing).await == want },
    )
    .await;
}

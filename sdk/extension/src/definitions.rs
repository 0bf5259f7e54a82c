//! Builders for the [`Definitions`] an extension returns, so a definition reads as one expression:
//!
//! ```
//! use thingport_sdk::protocol::{BaseType, Definitions, Field, ThingDef, ThingTemplateDef};
//!
//! let definitions = Definitions::new()
//!     .template(
//!         ThingTemplateDef::new("CounterTemplate")
//!             .describe("counts")
//!             .property(Field::new("count", BaseType::Long)),
//!     )
//!     .thing(ThingDef::new("Counter", "CounterTemplate"));
//! assert_eq!(definitions.things[0].template, "CounterTemplate");
//! ```

use crate::protocol::{
    ConfigField, ConfigTableDef, DataShapeDef, Definitions, Field, RouteDef, ServiceDecl,
    SubsystemDef, TemplateServicesDef, ThingDef, ThingShapeDef, ThingTemplateDef,
};

impl Definitions {
    /// No definitions.
    pub fn new() -> Definitions {
        Definitions::default()
    }
    pub fn data_shape(mut self, shape: DataShapeDef) -> Self {
        self.data_shapes.push(shape);
        self
    }
    pub fn thing_shape(mut self, shape: ThingShapeDef) -> Self {
        self.thing_shapes.push(shape);
        self
    }
    pub fn template(mut self, template: ThingTemplateDef) -> Self {
        self.thing_templates.push(template);
        self
    }
    pub fn thing(mut self, thing: ThingDef) -> Self {
        self.things.push(thing);
        self
    }
    pub fn subsystem(mut self, subsystem: SubsystemDef) -> Self {
        self.subsystems.push(subsystem);
        self
    }
    /// Services on a template the extension does not define (e.g. `RemoteThing`), ABI 1.2.
    pub fn template_services(mut self, template: &str, services: Vec<ServiceDecl>) -> Self {
        self.template_services.push(TemplateServicesDef {
            template: template.into(),
            services,
        });
        self
    }
    pub fn route(mut self, route: RouteDef) -> Self {
        self.routes.push(route);
        self
    }
}

impl DataShapeDef {
    /// A data shape without fields; see also [`data_shape`](crate::data_shape) to derive the
    /// fields from a struct.
    pub fn new(name: &str) -> DataShapeDef {
        DataShapeDef {
            name: name.into(),
            description: String::new(),
            fields: Vec::new(),
        }
    }
    pub fn describe(mut self, description: &str) -> Self {
        self.description = description.into();
        self
    }
    pub fn field(mut self, field: Field) -> Self {
        self.fields.push(field);
        self
    }
}

impl ThingShapeDef {
    pub fn new(name: &str) -> ThingShapeDef {
        ThingShapeDef {
            name: name.into(),
            description: String::new(),
            properties: Vec::new(),
            services: Vec::new(),
        }
    }
    pub fn describe(mut self, description: &str) -> Self {
        self.description = description.into();
        self
    }
    pub fn property(mut self, property: Field) -> Self {
        self.properties.push(property);
        self
    }
    pub fn service(mut self, service: ServiceDecl) -> Self {
        self.services.push(service);
        self
    }
}

impl ThingTemplateDef {
    /// A template based on `GenericThing` (the host's default).
    pub fn new(name: &str) -> ThingTemplateDef {
        ThingTemplateDef {
            name: name.into(),
            description: String::new(),
            base: None,
            shapes: Vec::new(),
            properties: Vec::new(),
            services: Vec::new(),
        }
    }
    pub fn describe(mut self, description: &str) -> Self {
        self.description = description.into();
        self
    }
    /// The base template, e.g. `RemoteThing`.
    pub fn based_on(mut self, base: &str) -> Self {
        self.base = Some(base.into());
        self
    }
    /// A thing shape the template implements.
    pub fn implements(mut self, shape: &str) -> Self {
        self.shapes.push(shape.into());
        self
    }
    pub fn property(mut self, property: Field) -> Self {
        self.properties.push(property);
        self
    }
    pub fn service(mut self, service: ServiceDecl) -> Self {
        self.services.push(service);
        self
    }
}

impl ThingDef {
    pub fn new(name: &str, template: &str) -> ThingDef {
        ThingDef {
            name: name.into(),
            template: template.into(),
            description: String::new(),
            services: Vec::new(),
        }
    }
    pub fn describe(mut self, description: &str) -> Self {
        self.description = description.into();
        self
    }
    /// A service on this Thing alone.
    pub fn service(mut self, service: ServiceDecl) -> Self {
        self.services.push(service);
        self
    }
}

impl SubsystemDef {
    pub fn new(name: &str) -> SubsystemDef {
        SubsystemDef {
            name: name.into(),
            description: String::new(),
            configuration: Vec::new(),
            services: Vec::new(),
        }
    }
    pub fn describe(mut self, description: &str) -> Self {
        self.description = description.into();
        self
    }
    /// A configuration table; the host validates the values against its fields and ranges.
    pub fn configuration(mut self, table: ConfigTableDef) -> Self {
        self.configuration.push(table);
        self
    }
    pub fn service(mut self, service: ServiceDecl) -> Self {
        self.services.push(service);
        self
    }
}

impl ConfigTableDef {
    pub fn new(name: &str) -> ConfigTableDef {
        ConfigTableDef {
            name: name.into(),
            fields: Vec::new(),
        }
    }
    pub fn field(mut self, field: ConfigField) -> Self {
        self.fields.push(field);
        self
    }
}

impl ConfigField {
    /// A configuration field without a range.
    pub fn new(field: Field) -> ConfigField {
        ConfigField {
            field,
            min: None,
            max: None,
        }
    }
    /// Values outside `min..=max` are refused by the host.
    pub fn range(mut self, min: f64, max: f64) -> Self {
        self.min = Some(min);
        self.max = Some(max);
        self
    }
}

impl From<Field> for ConfigField {
    fn from(field: Field) -> ConfigField {
        ConfigField::new(field)
    }
}

impl RouteDef {
    /// A WebSocket route the host serves for the extension, e.g. `/Thingworx/WS`.
    /// Defaults: 64 KiB messages, 10 s to the first message, pings every 10 s, closed after 25 s
    /// without hearing from the peer.
    pub fn new(path: &str) -> RouteDef {
        RouteDef {
            path: path.into(),
            subprotocols: Vec::new(),
            max_message_bytes: RouteDef::default_max_message_bytes(),
            hello_timeout_ms: RouteDef::default_hello_timeout_ms(),
            ping_interval_ms: RouteDef::default_ping_interval_ms(),
            idle_timeout_ms: RouteDef::default_idle_timeout_ms(),
        }
    }
    /// The largest text message accepted.
    pub fn max_message_bytes(mut self, bytes: u32) -> Self {
        self.max_message_bytes = bytes;
        self
    }
    /// Liveness: ping every `ping_interval_ms`, close after `idle_timeout_ms` of silence, and
    /// close a connection whose first message does not arrive within `hello_timeout_ms`.
    pub fn timing(
        mut self,
        hello_timeout_ms: u64,
        ping_interval_ms: u64,
        idle_timeout_ms: u64,
    ) -> Self {
        self.hello_timeout_ms = hello_timeout_ms;
        self.ping_interval_ms = ping_interval_ms;
        self.idle_timeout_ms = idle_timeout_ms;
        self
    }
    /// A WebSocket subprotocol accepted on the route, e.g. `thingport.v1`.
    pub fn subprotocol(mut self, subprotocol: &str) -> Self {
        self.subprotocols.push(subprotocol.into());
        self
    }
}

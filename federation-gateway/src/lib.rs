//! The federation gateway: routes requests between regions (built with the gateway issue).

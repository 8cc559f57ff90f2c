//! The shared rate limiter on Cloudflare: the Durable Object that keeps one provider's
//! limiter for every isolate ([`RateLimiterObject`], one object per provider identity),
//! and an isolate's way to it ([`ObjectLink`] over the object's stub).
//!
//! The object only moves bytes and stores the core's snapshot: every message is handled by
//! [`LimiterObject::handle`], and the state lives in the object's storage (a SQLite-backed
//! class), written within [`STORE_WITHIN_MS`] of a change (one write for all the changes
//! of that time, in the object's `wait_until`, which eviction waits for).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use wasm_bindgen::{JsCast, JsValue};
use worker::{
    console_warn, durable_object, DurableObject, Env, Method, ObjectNamespace, Request,
    RequestInit, Response, State,
};

use crate::budget::Answer;
use crate::runtime::Runtime;
use crate::runtime::TransportError;
use crate::shared_limit::{LimiterObject, ObjectLink, STORE_WITHIN_MS};
use crate::wasm::WasmRuntime;

/// The binding of the objects' namespace in wrangler.toml.
pub const BINDING: &str = "LIMITER";

/// One provider's rate limiter, shared by every isolate (see the module docs).
#[durable_object]
pub struct RateLimiterObject {
    state: State,
    object: Rc<RefCell<Option<LimiterObject>>>,
    loaded: Cell<bool>,
    /// Whether a write of the state is scheduled.
    storing: Rc<Cell<bool>>,
}

/// The storage key of the limiter's snapshot.
const KEY: &str = "limiter";

impl RateLimiterObject {
    /// The object as storage has it, read once per life of the object in memory.
    async fn load(&self) {
        if self.loaded.get() {
            return;
        }
        match self.state.storage().get::<String>(KEY).await {
            Ok(snapshot) => {
                *self.object.borrow_mut() = snapshot.as_deref().and_then(LimiterObject::restore);
            }
            Err(e) => console_warn!("the limiter's storage could not be read: {e}"),
        }
        self.loaded.set(true);
    }

    /// Writes the state within [`STORE_WITHIN_MS`], unless a write is scheduled already:
    /// that one takes this change too.
    fn store_soon(&self) {
        if self.storing.replace(true) {
            return;
        }
        let state: worker::worker_sys::DurableObjectState =
            AsRef::<JsValue>::as_ref(self.state.as_raw())
                .clone()
                .unchecked_into();
        let object = Rc::clone(&self.object);
        let storing = Rc::clone(&self.storing);
        self.state.wait_until(async move {
            let runtime = WasmRuntime;
            runtime.sleep(STORE_WITHIN_MS).await;
            // A change from here on schedules the next write.
            storing.set(false);
            let snapshot = object.borrow().as_ref().map(LimiterObject::snapshot);
            let Some(snapshot) = snapshot else { return };
            let written = match state.storage() {
                Ok(storage) => match storage.put(KEY, JsValue::from_str(&snapshot)) {
                    Ok(promise) => wasm_bindgen_futures::JsFuture::from(promise)
                        .await
                        .map(|_| ()),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                console_warn!("the limiter's state could not be stored: {e:?}");
            }
        });
    }
}

impl DurableObject for RateLimiterObject {
    fn new(state: State, _env: Env) -> Self {
        RateLimiterObject {
            state,
            object: Rc::new(RefCell::new(None)),
            loaded: Cell::new(false),
            storing: Rc::new(Cell::new(false)),
        }
    }

    async fn fetch(&self, mut request: Request) -> worker::Result<Response> {
        let body = request.bytes().await.unwrap_or_default();
        self.load().await;
        let handled =
            LimiterObject::handle(&mut self.object.borrow_mut(), js_sys::Date::now(), &body);
        if handled.changed {
            self.store_soon();
        }
        Ok(Response::from_bytes(handled.body.into_bytes())?.with_status(handled.status))
    }
}

/// An isolate's way to the object named `name` (a provider's identity).
pub struct Link {
    namespace: ObjectNamespace,
    name: String,
}

impl Link {
    /// The link to object `name` of the namespace bound as [`BINDING`], if it is bound.
    pub fn new(env: &Env, name: String) -> Option<Link> {
        env.durable_object(BINDING)
            .ok()
            .map(|namespace| Link { namespace, name })
    }
}

impl ObjectLink for Link {
    fn send(&self, body: String) -> Answer<'_, Result<(u16, Vec<u8>), TransportError>> {
        Box::pin(async move {
            let failed = |e: worker::Error| TransportError(e.to_string());
            let stub = self.namespace.get_by_name(&self.name).map_err(failed)?;
            let mut init = RequestInit::new();
            init.with_method(Method::Post)
                .with_body(Some(JsValue::from_str(&body)));
            let request =
                Request::new_with_init("https://limiter.internal/", &init).map_err(failed)?;
            let mut response = stub.fetch_with_request(request).await.map_err(failed)?;
            let bytes = response.bytes().await.map_err(failed)?;
            Ok((response.status_code(), bytes))
        })
    }
}

//! Parse and validate: the attribute's arguments and the trait become a [`CapModel`].
//!
//! Every problem is collected (not just the first) and spanned at the tokens at fault, with
//! a message that says what to write instead: the complaint users have about RPC macros is
//! errors that point at the attribute and say nothing.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::{Attribute, Ident, ItemTrait, LitStr, Path, TraitItem, Type};

use crate::types;

mod method;
mod returns;

/// Methods of every generated client: a trait method with one of these Rust names would
/// collide with them.
const CLIENT_METHODS: &[&str] = &[
    "from_client",
    "client",
    "into_client",
    "handle",
    "from_handle",
    "with_options",
    "with_deadline",
    "with_context",
    "release",
    "dispose",
    "clone",
    "fmt",
];

/// A validated cap trait.
pub(crate) struct CapModel {
    /// The path of the runtime crate (`::bunite_rpc` unless `crate = "..."`).
    pub krate: Path,
    pub name: String,
    pub version: Option<String>,
    /// The trait as written, minus our method attributes.
    pub item: ItemTrait,
    pub marker: Ident,
    pub client: Ident,
    pub server: Ident,
    pub methods: Vec<Method>,
}

impl CapModel {
    /// The disposal method, if one is marked `dispose`.
    pub fn disposal(&self) -> Option<&Method> {
        self.methods.iter().find(|m| m.disposal)
    }
}

/// One method of the cap.
pub(crate) struct Method {
    pub ident: Ident,
    pub wire: String,
    pub docs: Vec<Attribute>,
    /// The arguments after `&self`, in declared order.
    pub args: Vec<Arg>,
    pub kind: Kind,
    pub idempotent: bool,
    pub keep_running: bool,
    pub disposal: bool,
}

impl Method {
    /// The params argument, if any.
    pub fn params(&self) -> Option<(&Ident, &Type)> {
        self.args.iter().find_map(|a| match a {
            Arg::Params { name, ty } => Some((name, ty)),
            _ => None,
        })
    }
}

/// An argument after `&self`. (Sizes do not matter here: a handful per method, once per
/// compilation.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Arg {
    /// The call's single `args` value.
    Params { name: Ident, ty: Type },
    /// The server context of the call (not sent).
    Context,
    /// Where an emitter-style stream handler sends its values (not sent).
    Emitter,
}

/// Call or stream, with what each yields.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Kind {
    Call {
        /// `T` of `Result<T, E>`.
        ok: Type,
        ret: Ret,
    },
    Stream {
        /// `T` of the stream's `Result<T, E>` items.
        item: Type,
        emitter: bool,
        credit: Option<u32>,
    },
}

/// What a call method returns, read off its `Ok` type.
pub(crate) enum Ret {
    Value,
    /// `Exported<C>`.
    Cap(Type),
    /// `Vec<Exported<C>>` (any container whose one type argument is `Exported<C>`).
    Array(Type),
    /// `BTreeMap<String, Exported<C>>`, `HashMap<String, Exported<C>>`,
    /// `Vec<(String, Exported<C>)>`.
    Record(Type),
}

/// Collects errors so the user sees all of them at once.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub(crate) fn at(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    pub(crate) fn at_span(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }
}

/// Why the attribute failed: the errors, and the trait with our method attributes removed
/// (when it parsed), so the expansion can keep it and avoid cascading errors.
pub(crate) struct Failed {
    pub error: syn::Error,
    pub item: Option<ItemTrait>,
}

/// Parses `#[cap(args)] input`.
pub(crate) fn parse(args: TokenStream, input: TokenStream) -> Result<CapModel, Box<Failed>> {
    let mut item: ItemTrait = syn::parse2(input).map_err(|e| {
        let error = syn::Error::new(
            e.span(),
            "#[bunite_rpc::cap] goes on a trait: `#[cap(name = \"demo.Counter\")] trait Counter { ... }`",
        );
        Box::new(Failed { error, item: None })
    })?;
    let mut errors = Errors::default();
    let top = parse_args(args, &mut errors);
    let krate = top
        .as_ref()
        .map(|(k, _, _)| k.clone())
        .unwrap_or_else(|| syn::parse_quote!(::bunite_rpc));
    check_trait(&item, &mut errors);
    let mut methods = Vec::new();
    for ti in &mut item.items {
        match ti {
            TraitItem::Fn(f) => {
                let attrs = method::take_method_attrs(f, &mut errors);
                if let Some(m) = method::method(f, attrs, &krate, &mut errors) {
                    methods.push(m);
                }
            }
            other => errors.at(
                &*other,
                "a cap trait holds only methods: move this item out of the trait",
            ),
        }
    }
    let client = format_ident(&item.ident, "Client");
    check_methods(&methods, &item.ident, &client, &mut errors);
    match (errors.0, top) {
        (None, Some((krate, name, version))) => Ok(CapModel {
            krate,
            name,
            version,
            marker: format_ident(&item.ident, "Cap"),
            server: format_ident(&item.ident, "Server"),
            client,
            item,
            methods,
        }),
        (error, _) => Err(Box::new(Failed {
            error: error.unwrap_or_else(|| syn::Error::new(Span::call_site(), "invalid #[cap]")),
            item: Some(item),
        })),
    }
}

fn format_ident(base: &Ident, suffix: &str) -> Ident {
    Ident::new(&format!("{base}{suffix}"), base.span())
}

/// `name = "..."`, `version = "..."`, `crate = "path"`.
fn parse_args(args: TokenStream, errors: &mut Errors) -> Option<(Path, String, Option<String>)> {
    let mut name: Option<LitStr> = None;
    let mut version: Option<LitStr> = None;
    let mut krate: Option<Path> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            name = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("version") {
            version = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("crate") {
            let lit: LitStr = meta.value()?.parse()?;
            krate = Some(lit.parse()?);
        } else {
            return Err(meta.error(
                "unknown #[cap] argument; expected `name = \"...\"`, `version = \"...\"` or \
                 `crate = \"path::to::bunite_rpc\"`",
            ));
        }
        Ok(())
    });
    if let Err(e) = syn::parse::Parser::parse2(parser, args) {
        errors.push(e);
        return None;
    }
    let Some(name) = name else {
        errors.at_span(
            Span::call_site(),
            "missing `name`: every cap has a wire name, e.g. \
             `#[bunite_rpc::cap(name = \"demo.Counter\")]`",
        );
        return None;
    };
    if name.value().is_empty() {
        errors.at(&name, "the cap name cannot be empty");
    }
    if version.as_ref().is_some_and(|v| v.value().is_empty()) {
        errors.at(
            &version,
            "the version cannot be empty: leave `version` out for none",
        );
    }
    let krate = krate.unwrap_or_else(|| syn::parse_quote!(::bunite_rpc));
    Some((krate, name.value(), version.map(|v| v.value())))
}

fn check_trait(item: &ItemTrait, errors: &mut Errors) {
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        errors.at(
            &item.generics,
            "a cap trait cannot be generic: a cap has one wire definition; use concrete serde \
             types (an enum for alternatives)",
        );
    }
    if let Some(u) = &item.unsafety {
        errors.at(u, "a cap trait cannot be `unsafe`");
    }
    if let Some(a) = &item.auto_token {
        errors.at(a, "a cap trait cannot be an auto trait");
    }
}

/// Checks across methods: wire names unique, one disposal method, no collision with the
/// generated client's own methods, cap returns naming markers.
fn check_methods(methods: &[Method], trait_ident: &Ident, client: &Ident, errors: &mut Errors) {
    let mut disposal: Option<&Method> = None;
    for (i, m) in methods.iter().enumerate() {
        if let Kind::Call {
            ret: Ret::Cap(cap) | Ret::Array(cap) | Ret::Record(cap),
            ..
        } = &m.kind
        {
            let named = types::last_segment(cap).map(|s| s.ident.to_string());
            if named.as_deref() == Some("Self") || named == Some(trait_ident.to_string()) {
                errors.at(
                    cap,
                    format!(
                        "`Exported` takes the cap's marker type: write `Exported<{trait_ident}Cap>`"
                    ),
                );
            }
        }
        if methods[..i].iter().any(|o| o.wire == m.wire) {
            errors.at(
                &m.ident,
                format!(
                    "two methods have the wire name \"{}\": rename one with \
                     `#[cap(name = \"...\")]`",
                    m.wire
                ),
            );
        }
        if m.disposal {
            if let Some(first) = disposal {
                errors.at(
                    &m.ident,
                    format!(
                        "only one method can be the disposal method (`{}` already is)",
                        first.ident
                    ),
                );
            }
            disposal = disposal.or(Some(m));
        }
        let rust = m.ident.to_string();
        let is_dispose = m.disposal && rust == "dispose";
        if CLIENT_METHODS.contains(&rust.as_str()) && !is_dispose {
            errors.at(
                &m.ident,
                format!(
                    "`{rust}` is a method of the generated `{client}`: rename the Rust method \
                     and keep the wire name with `#[cap(name = \"{}\")]`",
                    m.wire
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn model(args: TokenStream, item: TokenStream) -> Result<CapModel, String> {
        parse(args, item).map_err(|f| {
            f.error
                .into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    #[test]
    fn reads_names_kinds_and_shapes() {
        let m = model(
            quote!(name = "demo.Counter", version = "1"),
            quote! {
                pub trait Counter {
                    #[cap(idempotent)]
                    async fn get(&self) -> Result<u64, Status>;
                    async fn make_child(&self, p: Named, ctx: CallContext)
                        -> Result<Exported<ChildCap>, Status>;
                    async fn child_map(&self) -> Result<BTreeMap<String, Exported<ChildCap>>, Status>;
                    #[cap(stream, initial_credit = 16, name = "tick")]
                    fn ticks(&self) -> impl Stream<Item = Result<Tick, Status>>;
                    #[cap(dispose)]
                    async fn close(&self) -> Result<(), Status>;
                }
            },
        )
        .unwrap();
        assert_eq!(
            (m.name.as_str(), m.version.as_deref()),
            ("demo.Counter", Some("1"))
        );
        assert_eq!(m.marker, "CounterCap");
        let wire: Vec<_> = m.methods.iter().map(|m| m.wire.as_str()).collect();
        assert_eq!(wire, ["get", "makeChild", "childMap", "tick", "close"]);
        assert!(m.methods[0].idempotent);
        assert!(matches!(
            m.methods[1].kind,
            Kind::Call {
                ret: Ret::Cap(_),
                ..
            }
        ));
        assert!(matches!(
            m.methods[1].args[..],
            [Arg::Params { .. }, Arg::Context]
        ));
        assert!(matches!(
            m.methods[2].kind,
            Kind::Call {
                ret: Ret::Record(_),
                ..
            }
        ));
        assert!(matches!(
            m.methods[3].kind,
            Kind::Stream {
                credit: Some(16),
                emitter: false,
                ..
            }
        ));
        assert_eq!(m.disposal().map(|d| d.wire.as_str()), Some("close"));
        // Our attributes are gone from the trait that is emitted.
        let item = &m.item;
        assert!(!quote!(#item).to_string().contains("cap ("));
    }

    #[test]
    fn reports_every_problem_at_once() {
        let errors = model(
            quote!(name = "demo.Bad"),
            quote! {
                trait Bad {
                    async fn a(&mut self) -> Result<(), Status>;
                    async fn b(&self, x: u32, y: u32) -> Result<(), Status>;
                    async fn c(&self) -> u32;
                    #[cap(bogus)]
                    async fn d(&self) -> Result<(), Status>;
                }
            },
        )
        .err()
        .unwrap();
        for needle in [
            "&mut self",
            "at most one params",
            "returns `Result",
            "unknown",
        ] {
            assert!(errors.contains(needle), "{needle} in {errors}");
        }
    }
}

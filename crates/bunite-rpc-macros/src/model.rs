//! Parse and validate: the attribute's arguments and the trait become a [`CapModel`].
//!
//! Every problem is collected (not just the first) and spanned at the tokens at fault, with
//! a message that says what to write instead: the complaint users have about RPC macros is
//! errors that point at the attribute and say nothing.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, Ident, ItemTrait, LitInt, LitStr, Pat, Path, ReturnType, Signature,
    TraitItem, TraitItemFn, Type,
};

use crate::types;

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
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    fn at(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    fn at_span(&mut self, span: Span, message: impl std::fmt::Display) {
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
                let attrs = take_method_attrs(f, &mut errors);
                if let Some(m) = method(f, attrs, &krate, &mut errors) {
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

/// The options of one method, from its `#[cap(...)]` attributes.
#[derive(Default)]
struct MethodAttrs {
    name: Option<LitStr>,
    idempotent: bool,
    stream: Option<Span>,
    credit: Option<LitInt>,
    dispose: Option<Span>,
    keep_running: Option<Span>,
}

/// Removes the `#[cap(...)]` attributes of a method and parses them.
fn take_method_attrs(f: &mut TraitItemFn, errors: &mut Errors) -> MethodAttrs {
    let mut out = MethodAttrs::default();
    let (ours, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut f.attrs)
        .into_iter()
        .partition(|a| a.path().segments.last().is_some_and(|s| s.ident == "cap"));
    f.attrs = rest;
    for attr in ours {
        let r = attr.parse_nested_meta(|meta| {
            let p = &meta.path;
            if p.is_ident("name") {
                out.name = Some(meta.value()?.parse()?);
            } else if p.is_ident("idempotent") {
                out.idempotent = true;
            } else if p.is_ident("stream") {
                out.stream = Some(p.span());
            } else if p.is_ident("initial_credit") {
                out.credit = Some(meta.value()?.parse()?);
            } else if p.is_ident("dispose") {
                out.dispose = Some(p.span());
            } else if p.is_ident("keep_running_on_cancel") {
                out.keep_running = Some(p.span());
            } else if p.is_ident("returns") {
                return Err(meta.error(
                    "cap returns are read off the return type: return `Exported<ChildCap>`, \
                     `Vec<Exported<ChildCap>>` or `BTreeMap<String, Exported<ChildCap>>`",
                ));
            } else {
                return Err(meta.error(
                    "unknown method option; expected `name = \"wireName\"`, `idempotent`, \
                     `stream`, `initial_credit = N`, `dispose` or `keep_running_on_cancel`",
                ));
            }
            Ok(())
        });
        if let Err(e) = r {
            errors.push(e);
        }
    }
    out
}

/// Validates one method and reads its arguments and return.
fn method(
    f: &TraitItemFn,
    attrs: MethodAttrs,
    krate: &Path,
    errors: &mut Errors,
) -> Option<Method> {
    let sig = &f.sig;
    check_signature(sig, errors);
    let args = arguments(sig, attrs.stream.is_some(), errors);
    let kind = kind(sig, &attrs, &args, krate, errors);
    check_attrs(sig, &attrs, &args, kind.as_ref(), errors);
    let kind = kind?;
    let wire = match &attrs.name {
        Some(n) if n.value().is_empty() => {
            errors.at(n, "the wire name cannot be empty");
            return None;
        }
        Some(n) => n.value(),
        None => heck::ToLowerCamelCase::to_lower_camel_case(
            sig.ident.to_string().trim_start_matches("r#"),
        ),
    };
    let args = args.into_iter().map(|(a, _)| a).collect();
    Some(Method {
        ident: sig.ident.clone(),
        wire,
        docs: f
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .cloned()
            .collect(),
        args,
        kind,
        idempotent: attrs.idempotent,
        keep_running: attrs.keep_running.is_some(),
        disposal: attrs.dispose.is_some(),
    })
}

fn check_signature(sig: &Signature, errors: &mut Errors) {
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.at(
            &sig.generics,
            "a cap method cannot be generic: the server must know the concrete type to decode \
             the call's params",
        );
    }
    if let Some(c) = &sig.constness {
        errors.at(c, "a cap method cannot be `const`");
    }
    if let Some(u) = &sig.unsafety {
        errors.at(u, "a cap method cannot be `unsafe`");
    }
    if let Some(a) = &sig.abi {
        errors.at(a, "a cap method cannot have an ABI");
    }
    if let Some(v) = &sig.variadic {
        errors.at(v, "a cap method cannot be variadic");
    }
    match sig.receiver() {
        None => errors.at(
            &sig.ident,
            "a cap method takes `&self`: add `&self` as its first argument",
        ),
        Some(r) if r.reference.is_none() => errors.at(
            r,
            "cap methods take `&self`, not `self`: one implementation serves every call",
        ),
        Some(r) if r.mutability.is_some() => errors.at(
            r,
            "cap methods take `&self`, not `&mut self`: calls run concurrently on one shared \
             implementation; keep mutable state behind a `Mutex` or atomics",
        ),
        Some(r) if r.colon_token.is_some() && !is_ref_self(&r.ty) => {
            errors.at(r, "cap methods take `&self`")
        }
        Some(_) => {}
    }
}

fn is_ref_self(ty: &Type) -> bool {
    matches!(ty, Type::Reference(r) if r.mutability.is_none()
        && matches!(&*r.elem, Type::Path(p) if p.path.is_ident("Self")))
}

/// The arguments after the receiver, each with its span for later checks.
fn arguments(sig: &Signature, is_stream: bool, errors: &mut Errors) -> Vec<(Arg, Span)> {
    let mut out: Vec<(Arg, Span)> = Vec::new();
    let mut first_params: Option<syn::PatType> = None;
    for input in &sig.inputs {
        let FnArg::Typed(pt) = input else { continue };
        let ty = &*pt.ty;
        let span = pt.span();
        let arg = if types::is_context(ty) {
            if out.iter().any(|(a, _)| matches!(a, Arg::Context)) {
                errors.at(pt, "a cap method takes at most one `CallContext` argument");
            }
            Arg::Context
        } else if let Some(args) = types::named(ty, "Emitter") {
            if args.len() != 1 {
                errors.at(
                    ty,
                    "an emitter argument is `bunite_rpc::typed::Emitter<T>`, with `T` the type \
                     of the stream's values",
                );
            } else if !is_stream {
                errors.at(
                    pt,
                    "an `Emitter<T>` argument makes a stream method: add `#[cap(stream)]`",
                );
            }
            if out.iter().any(|(a, _)| matches!(a, Arg::Emitter)) {
                errors.at(
                    pt,
                    "a stream method takes at most one `Emitter<T>` argument",
                );
            }
            Arg::Emitter
        } else {
            check_params_type(ty, errors);
            if let Some(first) = &first_params {
                let mut e = syn::Error::new_spanned(
                    pt,
                    "a cap method takes at most one params argument (sent as the call's single \
                     `args` value): put these values together in one serde struct",
                );
                e.combine(syn::Error::new_spanned(
                    first,
                    "the first params argument is here",
                ));
                errors.push(e);
            } else {
                first_params = Some(pt.clone());
            }
            let name = match &*pt.pat {
                Pat::Ident(p) if p.subpat.is_none() => {
                    Ident::new(&p.ident.to_string(), p.ident.span())
                }
                _ => Ident::new("params", pt.pat.span()),
            };
            Arg::Params {
                name,
                ty: ty.clone(),
            }
        };
        out.push((arg, span));
    }
    out
}

fn check_params_type(ty: &Type, errors: &mut Errors) {
    match ty {
        Type::Reference(r) if types::is_context(&r.elem) => errors.at(
            ty,
            "take the `CallContext` by value: `ctx: CallContext` (it is cheap to clone)",
        ),
        Type::Reference(_) => errors.at(
            ty,
            "params are decoded into an owned value: take `String` rather than `&str`, `Vec<T>` \
             rather than `&[T]`",
        ),
        Type::ImplTrait(_) => errors.at(
            ty,
            "params need a concrete serde type, not `impl Trait`: the server decodes into it",
        ),
        _ => {}
    }
}

/// Reads what the method yields: a call's `Ok` type and cap shape, or a stream's item.
fn kind(
    sig: &Signature,
    attrs: &MethodAttrs,
    args: &[(Arg, Span)],
    krate: &Path,
    errors: &mut Errors,
) -> Option<Kind> {
    let has_emitter = args.iter().any(|(a, _)| matches!(a, Arg::Emitter));
    if attrs.stream.is_some() && !has_emitter {
        return stream_returning(sig, attrs, krate, errors);
    }
    let output = future_output(sig, attrs.stream.is_none(), errors)?;
    let ok = ok_type(output, krate, errors)?;
    if has_emitter {
        if let OkType::Spelled(ok) = &ok {
            if !matches!(ok, Type::Tuple(t) if t.elems.is_empty()) {
                errors.at(
                    ok,
                    "an emitter-style stream method returns `Result<(), Status>`: it sends its \
                     values through the `Emitter<T>`",
                );
                return None;
            }
        }
        let item = args.iter().find_map(|(a, _)| match a {
            Arg::Emitter => emitter_item(sig),
            _ => None,
        })?;
        return Some(Kind::Stream {
            item,
            emitter: true,
            credit: credit(attrs, errors),
        });
    }
    match ok {
        OkType::Spelled(ok) => {
            let ret = cap_return(&ok, errors)?;
            Some(Kind::Call { ok, ret })
        }
        // An alias of `Result`: caps cannot be read off it, so it returns a value.
        OkType::Projected(ok) => Some(Kind::Call {
            ok,
            ret: Ret::Value,
        }),
    }
}

fn emitter_item(sig: &Signature) -> Option<Type> {
    sig.inputs.iter().find_map(|i| match i {
        FnArg::Typed(pt) => match types::named(&pt.ty, "Emitter")?.as_slice() {
            [t] => Some((*t).clone()),
            _ => None,
        },
        _ => None,
    })
}

const RESULT: &str = "a cap method returns `Result<T, Status>` (the error may be any \
                      `E: Into<Status>`); for no value write `Result<(), Status>`";

/// The future's output: `R` of `async fn f(..) -> R` or of
/// `fn f(..) -> impl Future<Output = R>`.
fn future_output<'s>(sig: &'s Signature, is_call: bool, errors: &mut Errors) -> Option<&'s Type> {
    match (&sig.output, sig.asyncness.is_some()) {
        (ReturnType::Default, _) => {
            errors.at(
                &sig.ident,
                "a cap method returns `Result<T, Status>`: add `-> Result<(), Status>` for no value",
            );
            None
        }
        (ReturnType::Type(_, ty), true) => Some(&**ty),
        (ReturnType::Type(_, ty), false) => {
            let out = types::future_output(ty);
            if out.is_none() {
                let hint = if is_call && types::find_named(ty, "Stream").is_some() {
                    "; a method returning a stream needs `#[cap(stream)]`"
                } else {
                    ""
                };
                errors.at(
                    ty,
                    format!(
                        "a call method is an `async fn` (or returns `impl Future<Output = \
                         Result<T, Status>> + Send`){hint}"
                    ),
                );
            }
            out
        }
    }
}

/// The `T` of a result type.
enum OkType {
    /// Spelled out: `Result<T, E>`, or `Result<T>` (an alias with the error fixed).
    Spelled(Type),
    /// Another path, taken to be an alias of `Result`: `<R as MethodResult>::Ok`, checked by
    /// the compiler.
    Projected(Type),
}

fn ok_type(output: &Type, krate: &Path, errors: &mut Errors) -> Option<OkType> {
    if let Some((ok, _)) = types::result_parts(output) {
        return Some(OkType::Spelled(ok.clone()));
    }
    if let Some([ok]) = types::named(output, "Result").as_deref() {
        return Some(OkType::Spelled((*ok).clone()));
    }
    if let (true, Some(seg)) = (
        types::maybe_result_alias(output),
        types::find_named(output, "Exported"),
    ) {
        errors.at(
            seg,
            "a method returning caps spells its result out, `Result<Exported<C>, Status>`: the \
             macro reads the cap shape off it and cannot see through an alias",
        );
        return None;
    }
    if types::maybe_result_alias(output) {
        let projected = quote::quote_spanned! {output.span()=>
            <#output as #krate::__private::MethodResult>::Ok
        };
        return syn::parse2(projected).ok().map(OkType::Projected);
    }
    errors.at(output, RESULT);
    None
}

/// `fn f(..) -> impl Stream<Item = Result<T, E>> + Send + 'static`, or any stream type whose
/// item is spelled `Result<T, E>` or given as `Item = R`.
fn stream_returning(
    sig: &Signature,
    attrs: &MethodAttrs,
    krate: &Path,
    errors: &mut Errors,
) -> Option<Kind> {
    const SHAPE: &str = "a stream method is a plain `fn` returning \
                         `impl Stream<Item = Result<T, Status>> + Send + 'static`, or an \
                         `async fn` taking an `Emitter<T>` argument and returning \
                         `Result<(), Status>`";
    if let Some(a) = &sig.asyncness {
        errors.at(a, SHAPE);
        return None;
    }
    let ReturnType::Type(_, ty) = &sig.output else {
        errors.at(&sig.ident, SHAPE);
        return None;
    };
    let item = match (types::find_result(ty), types::item_binding(ty)) {
        (Some((item, _)), _) => item,
        (None, Some(bound)) if !types::maybe_result_alias(bound) => {
            errors.at(
                bound,
                "stream items are `Result<T, Status>`: a source fails the stream with an `Err`",
            );
            return None;
        }
        (None, Some(bound)) => match ok_type(bound, krate, errors)? {
            OkType::Spelled(t) | OkType::Projected(t) => t,
        },
        (None, None) => {
            errors.at(ty, SHAPE);
            return None;
        }
    };
    if let Some(seg) = types::find_named(&item, "Exported") {
        errors.at(
            seg,
            "stream values cannot carry caps: return them from a call method",
        );
        return None;
    }
    Some(Kind::Stream {
        item,
        emitter: false,
        credit: credit(attrs, errors),
    })
}

fn credit(attrs: &MethodAttrs, errors: &mut Errors) -> Option<u32> {
    let lit = attrs.credit.as_ref()?;
    match lit.base10_parse::<u32>() {
        Ok(n) if (8..=1024).contains(&n) => Some(n),
        _ => {
            errors.at(
                lit,
                "initial_credit must be within 8..=1024 (PROTOCOL §5; below 8 a bunite-core \
                 0.10 client can deadlock, §13.1)",
            );
            None
        }
    }
}

/// The cap shape of a call's `Ok` type.
fn cap_return(ok: &Type, errors: &mut Errors) -> Option<Ret> {
    if let Some(cap) = types::exported_cap(ok) {
        return Some(Ret::Cap(cap.clone()));
    }
    let Some(seg) = types::find_named(ok, "Exported") else {
        return Some(Ret::Value);
    };
    let container = types::last_segment(ok).map(|s| s.ident.to_string());
    let args = types::last_segment(ok)
        .map(types::type_args)
        .unwrap_or_default();
    let sequence = matches!(container.as_deref(), Some("Vec" | "VecDeque"));
    let map = matches!(container.as_deref(), Some("BTreeMap" | "HashMap"));
    match args.as_slice() {
        [one] if sequence => {
            if let Some(cap) = types::exported_cap(one) {
                return Some(Ret::Array(cap.clone()));
            }
            if let Type::Tuple(t) = one {
                if let (2, Some(key), Some(cap)) = (
                    t.elems.len(),
                    t.elems.first(),
                    t.elems.last().and_then(types::exported_cap),
                ) {
                    check_key(key, errors);
                    return Some(Ret::Record(cap.clone()));
                }
            }
        }
        [key, value, ..] if map => {
            if let Some(cap) = types::exported_cap(value) {
                check_key(key, errors);
                return Some(Ret::Record(cap.clone()));
            }
        }
        _ => {}
    }
    errors.at(
        seg,
        "a cap-returning method returns one cap `Exported<C>`, an array `Vec<Exported<C>>` (or \
         `VecDeque`), or a string-keyed record `BTreeMap<String, Exported<C>>` (or `HashMap`, or \
         `Vec<(String, Exported<C>)>` in the server's order)",
    );
    None
}

fn check_key(key: &Type, errors: &mut Errors) {
    if types::named(key, "String").is_none() {
        errors.at(key, "records of caps are keyed by `String`");
    }
}

fn check_attrs(
    sig: &Signature,
    attrs: &MethodAttrs,
    args: &[(Arg, Span)],
    kind: Option<&Kind>,
    errors: &mut Errors,
) {
    if let (Some(c), None) = (&attrs.credit, attrs.stream) {
        errors.at(
            c,
            "`initial_credit` applies to stream methods: add `stream`",
        );
    }
    if let (Some(k), Some(_)) = (attrs.keep_running, attrs.stream) {
        errors.at_span(k, "`keep_running_on_cancel` applies to call methods");
    }
    let Some(d) = attrs.dispose else { return };
    if attrs.stream.is_some() {
        errors.at_span(d, "the disposal method must be a call method, not a stream");
    }
    if let Some((_, span)) = args.iter().find(|(a, _)| matches!(a, Arg::Params { .. })) {
        errors.at_span(
            *span,
            "the disposal method is called with no arguments: remove the params argument",
        );
    }
    if let Some(Kind::Call { ret, .. }) = kind {
        if !matches!(ret, Ret::Value) {
            errors.at(&sig.output, "the disposal method cannot return caps");
        }
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

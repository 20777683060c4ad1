use bunite_rpc::dynamic::DynCap;
use bunite_rpc::transport::memory;
use bunite_rpc::{CapDef, Connection, MethodDef, Value};
use futures::StreamExt;

#[tokio::test]
async fn smoke() {
    let def = CapDef::builder("demo.Greeter")
        .method(MethodDef::call("greet"))
        .method(MethodDef::stream("count"))
        .build();
    let (a, b) = memory::pair();
    let server = Connection::new(a);
    let client = Connection::new(b);
    let imp = DynCap::new()
        .call("greet", |args: Value, _ctx| async move {
            let name: String = bunite_rpc::from_value(args)?;
            Ok(Value::from(format!("hello, {name}")))
        })
        .stream("count", |_args, _ctx| {
            Ok(Box::pin(futures::stream::iter((0..100i64).map(|i| Ok(Value::from(i))))))
        });
    server.serve(def.clone(), imp.build()).await.unwrap().detach();
    let greeter = client.bootstrap(&def).await.unwrap();
    let reply: String = greeter.call("greet", "ada").await.unwrap();
    assert_eq!(reply, "hello, ada");
    let items: Vec<_> = greeter.stream("count", Value::Undefined).collect().await;
    assert_eq!(items.len(), 100);
    drop(greeter);
    client.close();
    client.closed().await;
    server.closed().await;
    println!("{:?} {:?}", client.stats(), server.stats());
    assert!(client.stats().is_idle() || client.stats().live_caps == 2);
}

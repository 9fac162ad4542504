//! Connects to a PulseWave server, joins a room and prints every message,
//! as `websocat` would. Type a line to send it as a chat message.
//!
//! ```bash
//! TOKEN=$(curl -s -X POST http://localhost:3000/api/token \
//!   -H "Content-Type: application/json" \
//!   -d '{"identity":"user-123","room":"my-room"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
//! cargo run -p pulsewave-examples --example join -- "$TOKEN" my-room
//! ```
//!
//! Optional third argument: the server URL (default `ws://127.0.0.1:3000`).

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(token), Some(room)) = (args.next(), args.next()) else {
        eprintln!("usage: join <token> <room> [ws://host:port]");
        std::process::exit(2);
    };
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:3000".into());
    let (ws, _) = tokio_tungstenite::connect_async(format!("{url}/?token={token}")).await?;
    let (mut tx, mut rx) = ws.split();
    let join = serde_json::json!({"type": "join", "room": room, "requestId": 1});
    println!("> {join}");
    tx.send(Message::text(join.to_string())).await?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(t))) => println!("< {t}"),
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
            },
            line = stdin.next_line() => match line? {
                Some(text) if !text.trim().is_empty() => {
                    let m = serde_json::json!({
                        "type": "publish-data",
                        "kind": "reliable",
                        "data": {"type": "chat", "message": text},
                    });
                    println!("> {m}");
                    tx.send(Message::text(m.to_string())).await?;
                }
                Some(_) => {}
                None => {
                    tx.send(Message::text(r#"{"type":"leave"}"#)).await?;
                }
            },
        }
    }
    Ok(())
}

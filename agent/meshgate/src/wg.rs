//! `meshgate wg ...`: direct access to the data plane.

use std::io::Read as _;

use meshgate_wg::{Engine, PrivateKey, wgconf};

use crate::cli::WgCommand;
use crate::show::InterfaceView;

pub async fn run(command: WgCommand) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        WgCommand::Apply {
            iface,
            file,
            backend,
        } => {
            let desired = wgconf::load(&file, &iface)?;
            let engine = Engine::new(backend.into())?;
            let report = engine.apply(&desired).await?;
            println!("{iface}: {report}");
        }
        WgCommand::Show { iface, json } => {
            let engine = Engine::new(Default::default())?;
            let view = InterfaceView::from_state(&engine.read(&iface).await?);
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print!("{}", view.to_text());
            }
        }
        WgCommand::Delete { iface } => Engine::new(Default::default())?.delete(&iface).await?,
        WgCommand::Genkey => println!("{}", PrivateKey::generate().to_base64()),
        WgCommand::Pubkey => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            let key: PrivateKey = text.trim().parse()?;
            println!("{}", key.public_key());
        }
    }
    Ok(())
}

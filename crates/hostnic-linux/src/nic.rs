//! NIC preparation: when the cloud says a NIC is attached, make its link ready
//! to carry pod traffic; before it is detached, undo that.

use std::net::Ipv4Addr;

use futures::TryStreamExt;
use hostnic_core::types::NicPlumbing;
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::{LinkUnspec, RouteMessageBuilder};

use crate::error::LinuxError;
use crate::host::LinuxHost;
use crate::nl::{self, ok_if_missing};

impl LinuxHost {
    /// Prepares the link of `nic`: up with the configured MTU, every IPv4 address
    /// removed (the address belongs to the pod; DHCP or NetworkManager may put it
    /// back, so the agent calls this again on [`crate::LinkEvent`]s), `rp_filter`
    /// off (see below), and its table `<gw>/32 dev nic scope link` + `default via <gw>`.
    /// [`LinuxError::LinkNotFound`] (retryable) while the link has not appeared.
    pub async fn prepare_nic_now(&self, nic: &NicPlumbing) -> Result<(), LinuxError> {
        let h = self.handle();
        let link = nl::link_by_mac(&self.conn, nic.nic.mac())
            .await?
            .ok_or_else(|| LinuxError::LinkNotFound(format!("with MAC {}", nic.nic)))?;
        let index = link.header.index;
        let name = nl::link_name(&link).unwrap_or_default().to_string();
        if !nl::link_is_up(&link) || nl::link_mtu(&link) != Some(self.config.mtu) {
            h.link()
                .set(
                    LinkUnspec::new_with_index(index)
                        .mtu(self.config.mtu)
                        .up()
                        .build(),
                )
                .execute()
                .await
                .map_err(LinuxError::netlink(format!("set {name} up")))?;
        }
        self.strip_ipv4_addresses(index, &name).await?;
        // Off, not loose: the NIC has no address, and for an address-less device
        // the kernel's source validation fails even in loose mode when the reverse
        // route does not use the device (fib_validate_source: no_addr → last_resort
        // → e_rpf), which is the case for every packet from the VPC to a pod
        // (the reverse lookup has no VPC mark and ends in the main table). The
        // effective value is max(all, <nic>), so `all` must be 0 (the systemd
        // default leaves it alone).
        self.sysctl(&format!("net/ipv4/conf/{name}/rp_filter"), "0")
            .await?;
        if let Ok(all) = self.read_sysctl("net/ipv4/conf/all/rp_filter").await
            && all.trim() != "0"
        {
            tracing::warn!(
                all = all.trim(),
                "net.ipv4.conf.all.rp_filter is not 0: replies to pods arriving on NICs will be dropped"
            );
        }
        let link_route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(nic.gateway, 32)
            .output_interface(index)
            .scope(RouteScope::Link)
            .table_id(nic.table)
            .build();
        h.route()
            .add(link_route)
            .replace()
            .execute()
            .await
            .map_err(LinuxError::netlink(format!(
                "add {}/32 dev {name} table {}",
                nic.gateway, nic.table
            )))?;
        let default = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(nic.gateway)
            .output_interface(index)
            .table_id(nic.table)
            .build();
        h.route()
            .add(default)
            .replace()
            .execute()
            .await
            .map_err(LinuxError::netlink(format!(
                "add default via {} dev {name} table {}",
                nic.gateway, nic.table
            )))?;
        Ok(())
    }

    async fn strip_ipv4_addresses(&self, index: u32, name: &str) -> Result<(), LinuxError> {
        let h = self.handle();
        for address in nl::addresses_v4(&self.conn, index).await? {
            tracing::info!(nic = name, "removing a host IPv4 address from a pod NIC");
            ok_if_missing(h.address().del(address).execute().await)
                .map_err(LinuxError::netlink(format!("delete address of {name}")))?;
        }
        Ok(())
    }

    /// Undoes [`LinuxHost::prepare_nic_now`]: flushes the NIC's table and takes
    /// the link down. Succeeds when the link is already gone. Returns every error.
    pub async fn release_nic_now(&self, nic: &NicPlumbing) -> Vec<LinuxError> {
        let h = self.handle();
        let mut errors = Vec::new();
        match nl::routes_v4(&self.conn).await {
            Ok(routes) => {
                for route in routes {
                    if nl::route_table(&route) == nic.table
                        && let Err(e) = ok_if_missing(h.route().del(route).execute().await)
                    {
                        errors.push(LinuxError::netlink(format!("flush table {}", nic.table))(e));
                    }
                }
            }
            Err(e) => errors.push(e),
        }
        match nl::link_by_mac(&self.conn, nic.nic.mac()).await {
            Ok(Some(link)) => {
                let down = LinkUnspec::new_with_index(link.header.index).down().build();
                if let Err(e) = ok_if_missing(h.link().set(down).execute().await) {
                    errors.push(LinuxError::netlink(format!("set {} down", nic.nic))(e));
                }
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
        errors
    }

    /// The route the kernel would pick for a packet from `src` to `dst` arriving
    /// on link `iif` (`ip route get <dst> from <src> iif <iif>`): the output link
    /// index and the gateway, for diagnostics and tests.
    pub async fn route_get(
        &self,
        dst: Ipv4Addr,
        src: Ipv4Addr,
        iif: u32,
        mark: Option<u32>,
    ) -> Result<(Option<u32>, Option<Ipv4Addr>), LinuxError> {
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, 32)
            .source_prefix(src, 32)
            .input_interface(iif);
        if let Some(mark) = mark {
            builder = builder.mark(mark);
        }
        let route = self
            .handle()
            .route()
            .get(builder.build())
            .execute()
            .try_next()
            .await
            .map_err(LinuxError::netlink(format!("route get {dst} from {src}")))?
            .ok_or_else(|| LinuxError::LinkNotFound(format!("route to {dst}")))?;
        Ok((nl::route_oif(&route), nl::route_gateway(&route)))
    }
}

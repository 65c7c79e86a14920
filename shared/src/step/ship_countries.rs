//! `SHIP_COUNTRIES`: where `ship-order` delivers, a setting every hosting reads.

use crate::contract::domain::Country;

/// Countries `ship-order` delivers to (`SHIP_COUNTRIES`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShipCountries {
    /// The default: everywhere except these (Antarctica).
    AllExcept(Vec<Country>),
    Only(Vec<Country>),
}

impl Default for ShipCountries {
    fn default() -> Self {
        // "AQ" is two capital letters: a valid country by construction.
        Self::AllExcept(vec![Country::parse("AQ").expect("AQ is a valid country code")])
    }
}

impl ShipCountries {
    /// `SHIP_COUNTRIES`: a comma-separated list of ISO 3166-1 alpha-2 codes;
    /// empty or unset means the default (everywhere but `AQ`).
    pub fn parse(list: &str) -> Result<Self, String> {
        let codes: Vec<&str> = list.split(',').map(str::trim).filter(|code| !code.is_empty()).collect();
        if codes.is_empty() {
            return Ok(Self::default());
        }
        codes
            .into_iter()
            .map(|code| Country::parse(code).map_err(|error| format!("SHIP_COUNTRIES: '{code}' {error}")))
            .collect::<Result<_, _>>()
            .map(Self::Only)
    }

    pub fn from_env() -> Result<Self, String> {
        Self::parse(&std::env::var("SHIP_COUNTRIES").unwrap_or_default())
    }

    pub fn ships_to(&self, country: &Country) -> bool {
        match self {
            Self::AllExcept(excluded) => !excluded.contains(country),
            Self::Only(included) => included.contains(country),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ship_countries_default_excludes_antarctica_only() {
        let countries = ShipCountries::parse("").unwrap();
        assert!(countries.ships_to(&Country::parse("FR").unwrap()));
        assert!(!countries.ships_to(&Country::parse("AQ").unwrap()));
    }

    #[test]
    fn ship_countries_list_is_exclusive_and_validated() {
        let countries = ShipCountries::parse("FR, DE").unwrap();
        assert!(countries.ships_to(&Country::parse("DE").unwrap()));
        assert!(!countries.ships_to(&Country::parse("US").unwrap()));
        assert!(ShipCountries::parse("FR,france").unwrap_err().contains("'france'"));
    }
}
